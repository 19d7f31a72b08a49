/* The object store on S3: not in this build yet (the S3 backend is being
 * written on its own branch); an s3:// repository is refused with a clear
 * error until it lands. */
#include <errno.h>

#include "backup/store.h"
#include "backup/util.h"

int store_s3_open(const char *url, bool create, struct store **out)
{
	(void)create;
	(void)out;
	bk_error("%s: S3 repositories are not supported by this build", url);
	return -ENOTSUP;
}
