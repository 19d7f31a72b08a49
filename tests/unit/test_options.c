/* Unit tests: bdfilterd's command-line values (daemon/options.c, nbd/nbd_listen.c),
 * the NBD limits among them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "nbd/nbd_listen.h"
#include "daemon/options.h"

static void device_specs(void **state)
{
	struct device_spec d;
	char err[256];

	assert_int_equal(device_spec_parse("disk=/tmp/x", &d, err, sizeof(err)), 0);
	assert_string_equal(d.name, "disk");
	assert_string_equal(d.path, "/tmp/x");
	assert_false(d.readonly);
	device_spec_free(&d);

	assert_int_equal(device_spec_parse("a=/dev/sda,ro,filter=passthrough", &d, err, sizeof(err)), 0);
	assert_true(d.readonly);
	assert_int_equal(d.n_filters, 1);
	assert_string_equal(d.filters[0], "passthrough");
	device_spec_free(&d);

	const char *bad[] = {
		"disk", "=/tmp/x", "disk=", "disk=/x,rw", "disk=/x,filter=nope",
		"disk=/x,filter=passthrough,filter=passthrough", "di sk=/x", "a/b=/x",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(device_spec_parse(bad[i], &d, err, sizeof(err)), -1);
		assert_true(strlen(err) > 0);
	}
}

static void listen_addrs(void **state)
{
	struct listen_addr a;
	char err[256];

	assert_int_equal(listen_addr_parse("unix:/run/x.sock", &a, err, sizeof(err)), 0);
	assert_int_equal(a.kind, LISTEN_UNIX);
	assert_string_equal(a.path, "/run/x.sock");
	listen_addr_free(&a);

	assert_int_equal(listen_addr_parse("tcp:10809", &a, err, sizeof(err)), 0);
	assert_string_equal(a.host, "127.0.0.1");
	assert_string_equal(a.port, "10809");
	listen_addr_free(&a);

	assert_int_equal(listen_addr_parse("tcp::10809", &a, err, sizeof(err)), 0);
	assert_string_equal(a.host, "127.0.0.1");
	listen_addr_free(&a);

	assert_int_equal(listen_addr_parse("tcp:0.0.0.0:1", &a, err, sizeof(err)), 0);
	assert_string_equal(a.host, "0.0.0.0");
	listen_addr_free(&a);

	assert_int_equal(listen_addr_parse("tcp:[::1]:65535", &a, err, sizeof(err)), 0);
	assert_string_equal(a.host, "::1");
	assert_string_equal(a.port, "65535");
	listen_addr_free(&a);

	const char *bad[] = {
		"unix:", "tcp:", "tcp:host:", "tcp:host:notaport", "tcp:0", "tcp:65536", "tcp:[::1]80",
		"foo:x", "", "/run/x.sock",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(listen_addr_parse(bad[i], &a, err, sizeof(err)), -1);
		assert_true(strlen(err) > 0);
	}
}

static void command_lines(void **state)
{
	struct options o;
	char *ok[] = { "bdfilterd", "-f", "--nbd-listen", "unix:/x", "--device", "d=/x", "--threads", "4", NULL };
	char *dup[] = { "bdfilterd", "--device", "d=/x", "--device", "d=/y", NULL };
	char *unknown[] = { "bdfilterd", "--bogus", "--device", "d=/x", NULL };
	char *threads[] = { "bdfilterd", "--threads", "0", "--device", "d=/x", NULL };
	char *none[] = { "bdfilterd", "--control", "none", NULL };
	char *control_only[] = { "bdfilterd", "--control", "/x.sock", NULL };
	char *param[] = { "bdfilterd", "--param", "chunk_minimum_shift=20", "--control", "/x", NULL };
	char *badparam[] = { "bdfilterd", "--param", "nope=1", "--control", "/x", NULL };
	char *fuse[] = { "bdfilterd", "--fuse-dir", "/run/f", "--device", "a=/tmp/a", NULL };
	char *fuse_empty[] = { "bdfilterd", "--fuse-dir", "", NULL };
	char *statedir[] = { "bdfilterd", "--state-dir", "/var/lib/bdfilter", "--device", "a=/tmp/a", NULL };
	char *state_empty[] = { "bdfilterd", "--state-dir", "", "--device", "a=/tmp/a", NULL };
	char *no_state[] = { "bdfilterd", "--device", "a=/tmp/a", NULL };
	/* --state-dir after --dm-ulog-listen once freed the latter's value */
	char *ulog[] = { "bdfilterd", "--dm-ulog-listen", "/u.sock", "--state-dir", "/s", "--dm-ulog",
			 "--device", "a=/tmp/a", NULL };
	char *ulog_empty[] = { "bdfilterd", "--dm-ulog-listen", "", "--device", "a=/tmp/a", NULL };

	assert_int_equal(options_parse(8, ok, &o), 0);
	assert_true(o.foreground);
	assert_int_equal(o.threads, 4);
	assert_int_equal(o.n_devices, 1);
	options_free(&o);
	assert_int_equal(options_parse(5, dup, &o), -1);
	options_free(&o);
	assert_int_equal(options_parse(4, unknown, &o), -1);
	options_free(&o);
	assert_int_equal(options_parse(5, threads, &o), -1);
	options_free(&o);
	assert_int_equal(options_parse(3, none, &o), -1);
	options_free(&o);
	/* devices can come later through the control socket */
	assert_int_equal(options_parse(3, control_only, &o), 0);
	assert_string_equal(o.control, "/x.sock");
	options_free(&o);
	assert_int_equal(options_parse(5, param, &o), 0);
	assert_int_equal(o.params.chunk_minimum_shift, 20);
	assert_int_equal(o.params.diff_storage_minimum, 2097152);
	options_free(&o);
	assert_int_equal(options_parse(5, badparam, &o), -1);
	options_free(&o);
	assert_int_equal(options_parse(5, fuse, &o), 0);
	assert_string_equal(o.fuse_dir, "/run/f");
	options_free(&o);
	assert_int_equal(options_parse(3, fuse_empty, &o), -1);
	options_free(&o);
	assert_int_equal(options_parse(5, statedir, &o), 0);
	assert_string_equal(o.state_dir, "/var/lib/bdfilter");
	options_free(&o);
	assert_int_equal(options_parse(5, state_empty, &o), -1);
	options_free(&o);
	/* by default the CBT lives in memory only */
	assert_int_equal(options_parse(3, no_state, &o), 0);
	assert_null(o.state_dir);
	assert_null(o.dm_ulog_listen);
	assert_false(o.dm_ulog);
	options_free(&o);
	assert_int_equal(options_parse(8, ulog, &o), 0);
	assert_string_equal(o.dm_ulog_listen, "/u.sock");
	assert_string_equal(o.state_dir, "/s");
	assert_true(o.dm_ulog);
	options_free(&o);
	assert_int_equal(options_parse(5, ulog_empty, &o), -1);
	options_free(&o);
}

/* TLS options: the mode word, credentials that --tls on|require,
 * --tls-verify-peer and --tls-authz need, one kind of credentials. Loading
 * them is bdfilterd's start-up (tests/interop/tls.sh). */
static void tls_options(void **state)
{
	struct options o;
	char *none[] = { "bdfilterd", "--device", "a=/tmp/a", NULL };
	char *req[] = { "bdfilterd", "--tls", "require", "--tls-creds", "/pki", "--device", "a=/tmp/a", NULL };
	char *psk[] = { "bdfilterd", "--tls", "on", "--tls-psk", "/k.psk", "--tls-authz", "alice",
			"--device", "a=/tmp/a", NULL };
	char *off[] = { "bdfilterd", "--tls", "off", "--device", "a=/tmp/a", NULL };
	char *verify[] = { "bdfilterd", "--tls-creds", "/pki", "--tls-verify-peer", "--device", "a=/tmp/a", NULL };
	char *bad[][8] = {
		{ "bdfilterd", "--tls", "maybe", "--tls-creds", "/pki", "--device", "a=/tmp/a", NULL },
		{ "bdfilterd", "--tls", "", "--tls-creds", "/pki", "--device", "a=/tmp/a", NULL },
		{ "bdfilterd", "--tls", "require", "--device", "a=/tmp/a", NULL },
		{ "bdfilterd", "--tls", "on", "--device", "a=/tmp/a", NULL },
		{ "bdfilterd", "--tls-creds", "/pki", "--tls-psk", "/k", "--device", "a=/tmp/a", NULL },
		{ "bdfilterd", "--tls-verify-peer", "--device", "a=/tmp/a", NULL },
		{ "bdfilterd", "--tls-authz", "CN=x", "--device", "a=/tmp/a", NULL },
		{ "bdfilterd", "--tls-creds", "", "--device", "a=/tmp/a", NULL },
	};

	(void)state;
	assert_int_equal(options_parse(3, none, &o), 0);
	assert_false(o.tls_mode_set); /* per listener: off on loopback, require beyond */
	assert_null(o.tls_creds);
	options_free(&o);
	assert_int_equal(options_parse(7, req, &o), 0);
	assert_true(o.tls_mode_set);
	assert_int_equal(o.tls_mode, NBD_TLS_REQUIRE);
	assert_string_equal(o.tls_creds, "/pki");
	options_free(&o);
	assert_int_equal(options_parse(9, psk, &o), 0);
	assert_int_equal(o.tls_mode, NBD_TLS_ON);
	assert_string_equal(o.tls_psk, "/k.psk");
	assert_string_equal(o.tls_authz, "alice");
	options_free(&o);
	assert_int_equal(options_parse(5, off, &o), 0);
	assert_int_equal(o.tls_mode, NBD_TLS_OFF);
	options_free(&o);
	assert_int_equal(options_parse(6, verify, &o), 0);
	assert_true(o.tls_verify_peer);
	assert_false(o.tls_mode_set);
	options_free(&o);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int argc = 0;

		while (bad[i][argc])
			argc++;
		assert_int_equal(options_parse(argc, bad[i], &o), -1);
		options_free(&o);
	}
}

static void control_groups(void **state)
{
	struct options o;
	char err[256];
	gid_t g = 7;
	char *numeric[] = { "bdfilterd", "--control-group", "4242", "--device", "a=/tmp/a", NULL };
	char *named[] = { "bdfilterd", "--control-group", "root", "--device", "a=/tmp/a", NULL };
	char *unknown[] = { "bdfilterd", "--control-group", "no-such-group-bdf", "--device", "a=/tmp/a", NULL };
	char *no_socket[] = { "bdfilterd", "--control", "none", "--control-group", "0", "--device", "a=/tmp/a",
			      NULL };
	char *none[] = { "bdfilterd", "--device", "a=/tmp/a", NULL };

	/* a number needs no /etc/group entry */
	assert_int_equal(parse_group("4242", &g, err, sizeof(err)), 0);
	assert_int_equal(g, 4242);
	assert_int_equal(parse_group("0", &g, err, sizeof(err)), 0);
	assert_int_equal(g, 0);
	assert_int_equal(parse_group("root", &g, err, sizeof(err)), 0);
	assert_int_equal(g, 0);
	assert_int_equal(parse_group("4294967294", &g, err, sizeof(err)), 0);
	assert_int_equal(g, 4294967294u);

	/* (gid_t)-1 is chown's "leave it"; a name must exist */
	const char *bad[] = { "", "4294967295", "99999999999", "12x", "-1", "no-such-group-bdf" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		g = 7;
		assert_int_equal(parse_group(bad[i], &g, err, sizeof(err)), -1);
		assert_true(strlen(err) > 0);
		assert_int_equal(g, 7);
	}
	assert_non_null(strstr((parse_group("no-such-group-bdf", &g, err, sizeof(err)), err), "no such group"));

	assert_int_equal(options_parse(5, numeric, &o), 0);
	assert_string_equal(o.control_group, "4242");
	assert_int_equal(o.control_gid, 4242);
	options_free(&o);
	assert_int_equal(options_parse(5, named, &o), 0);
	assert_string_equal(o.control_group, "root");
	assert_int_equal(o.control_gid, 0);
	options_free(&o);
	assert_int_equal(options_parse(5, unknown, &o), -1);
	options_free(&o);
	assert_int_equal(options_parse(7, no_socket, &o), -1);
	options_free(&o);
	/* by default root only */
	assert_int_equal(options_parse(3, none, &o), 0);
	assert_null(o.control_group);
	options_free(&o);
}

static void sizes(void **state)
{
	uint64_t v;

	assert_int_equal(parse_size("0", 0, UINT64_MAX, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(parse_size("4096", 0, UINT64_MAX, &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(parse_size("1k", 0, UINT64_MAX, &v), 0);
	assert_int_equal(v, 1024);
	assert_int_equal(parse_size("32M", 0, UINT64_MAX, &v), 0);
	assert_int_equal(v, 32u << 20);
	assert_int_equal(parse_size("3G", 0, UINT64_MAX, &v), 0);
	assert_int_equal(v, UINT64_C(3) << 30);
	assert_int_equal(parse_size("1T", 0, UINT64_MAX, &v), 0);
	assert_int_equal(v, UINT64_C(1) << 40);
	assert_int_equal(parse_size("16777215T", 0, UINT64_MAX, &v), 0);
	assert_int_equal(v, UINT64_C(16777215) << 40);

	const char *bad[] = {
		"", "-1", "+1", " 1", "1 ", "M", "1X", "1MB", "1.5M", "0x10", "1e3",
		"18446744073709551616", "16777216T", "17179869184G", "99999999999999999999999",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 7;
		assert_int_equal(parse_size(bad[i], 0, UINT64_MAX, &v), -1);
		assert_int_equal(v, 7);
	}
	/* the bounds are inclusive */
	assert_int_equal(parse_size("32M", 32u << 20, 32u << 20, &v), 0);
	assert_int_equal(parse_size("33554431", 32u << 20, UINT64_MAX, &v), -1);
	assert_int_equal(parse_size("33554433", 0, 32u << 20, &v), -1);
}

static void nbd_limits(void **state)
{
	struct options o;
	char *defaults[] = { "bdfilterd", "--device", "d=/x", NULL };
	char *small[] = { "bdfilterd", "--device", "d=/x", "--max-inflight", "64M", NULL };
	char *big[] = { "bdfilterd", "--device", "d=/x", "--max-inflight", "1G", "--max-connections", "2", NULL };
	char *share[] = { "bdfilterd", "--device", "d=/x", "--max-inflight-per-conn", "40M", NULL };
	char *equal[] = { "bdfilterd", "--device", "d=/x", "--max-inflight-per-conn", "32M",
			  "--max-inflight", "32M", NULL };
	char *over[] = { "bdfilterd", "--device", "d=/x", "--max-inflight-per-conn", "65M",
			 "--max-inflight", "64M", NULL };
	const char *bad_conns[] = { "0", "-1", "abc", "65537", "", " 5", "5x", "4294967297" };
	const char *bad_sizes[] = { "0", "-1", "abc", "31M", "2T", "", "32MB", "18446744073709551616" };

	assert_int_equal(options_parse(3, defaults, &o), 0);
	assert_int_equal(o.max_connections, 128);
	assert_int_equal(o.max_inflight, 512u << 20);
	assert_int_equal(o.max_inflight_conn, 64u << 20);
	options_free(&o);
	/* an eighth of the total, but never under the largest request */
	assert_int_equal(options_parse(5, small, &o), 0);
	assert_int_equal(o.max_inflight_conn, 32u << 20);
	options_free(&o);
	assert_int_equal(options_parse(7, big, &o), 0);
	assert_int_equal(o.max_connections, 2);
	assert_int_equal(o.max_inflight_conn, 128u << 20);
	options_free(&o);
	assert_int_equal(options_parse(5, share, &o), 0);
	assert_int_equal(o.max_inflight, 512u << 20);
	assert_int_equal(o.max_inflight_conn, 40u << 20);
	options_free(&o);
	assert_int_equal(options_parse(7, equal, &o), 0);
	assert_int_equal(o.max_inflight_conn, 32u << 20);
	options_free(&o);
	assert_int_equal(options_parse(7, over, &o), -1);
	options_free(&o);

	for (size_t i = 0; i < sizeof(bad_conns) / sizeof(bad_conns[0]); i++) {
		char *argv[] = { "bdfilterd", "--device", "d=/x", "--max-connections", (char *)bad_conns[i], NULL };

		assert_int_equal(options_parse(5, argv, &o), -1);
		options_free(&o);
	}
	for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
		char *total[] = { "bdfilterd", "--device", "d=/x", "--max-inflight", (char *)bad_sizes[i], NULL };
		char *conn[] = { "bdfilterd", "--device", "d=/x", "--max-inflight-per-conn", (char *)bad_sizes[i],
				 NULL };

		assert_int_equal(options_parse(5, total, &o), -1);
		options_free(&o);
		assert_int_equal(options_parse(5, conn, &o), -1);
		options_free(&o);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(device_specs),
		cmocka_unit_test(listen_addrs),
		cmocka_unit_test(command_lines),
		cmocka_unit_test(control_groups),
		cmocka_unit_test(tls_options),
		cmocka_unit_test(sizes),
		cmocka_unit_test(nbd_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
