/* The object store's front: which backend a URL names, and what a key may
 * be (store.h). */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "backup/store.h"

bool store_is_s3(const char *url)
{
	return strncmp(url, "s3://", 5) == 0;
}

int store_open(const char *url, bool create, struct store **out)
{
	if (store_is_s3(url))
		return store_s3_open(url, create, out);
	return store_dir_open(url, create, out);
}

bool store_key_valid(const char *key)
{
	const char *p = key;

	if (!*key)
		return false;
	/* Component by component: none empty, none starting with a dot (which
	 * also rules out "." and ".."; temporary files are named so). */
	for (;;) {
		const char *end = strchr(p, '/');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (len == 0 || p[0] == '.')
			return false;
		for (size_t i = 0; i < len; i++) {
			char ch = p[i];

			if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
			      ch == '.' || ch == '_' || ch == '-'))
				return false;
		}
		if (!end)
			return true;
		p = end + 1;
	}
}
