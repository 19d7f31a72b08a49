/* libFuzzer harness for the control plane: the bytes are one request line, run
 * through the real dispatcher and handlers against a registry with one 1 MiB
 * device (in a memfd) that may get the tracker attached. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/fault.h"
#include "common/log.h"
#include "control/handlers.h"
#include "core/device.h"
#include "core/registry.h"
#include "blksnap/blksnap.h"

static struct control_ctx ctx;
static struct blksnap bs;

static void setup_once(void)
{
	struct device *dev;
	char path[64];
	int fd;

	log_set_level(LOG_LEVEL_ERROR);
	params_defaults(&bs.params);
	fd = memfd_create("fuzz-disk", 0);
	if (fd < 0 || ftruncate(fd, 1 << 20) < 0)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (registry_new(&ctx.reg) < 0 || device_open("disk", path, false, &dev) < 0 ||
	    registry_add(ctx.reg, dev) < 0)
		abort();
	device_put(dev);
	ctx.bs = &bs;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_object *resp;
	char *line;

	if (!ctx.reg)
		setup_once();
	/* device_add would let the fuzzer open files of this machine, and
	 * device_resize grow the memfd past what a CBT map can be allocated for:
	 * not here. */
	if (memmem(data, size, "device_add", 10) || memmem(data, size, "device_remove", 13) ||
	    memmem(data, size, "device_resize", 13))
		return 0;
	line = malloc(size + 1);
	if (!line)
		return 0;
	memcpy(line, data, size);
	line[size] = '\0';
	resp = control_dispatch(control_handlers, &ctx, line, size);
	json_object_put(resp);
	/* A fault point's rule lives in the process: one input's must not
	 * fail or delay the next one's. */
	fault_points_reset();
	free(line);
	return 0;
}
