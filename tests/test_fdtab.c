/*
 * test_fdtab.c - the client's fd table (shim/fdtab.c), and the interposer's list of hooks
 * against the symbols its version script exports.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../preload/hooks.h"
/* The client side of the shim is linked only into libustack.so: the test builds the unit
 * it tests itself. */
#include "../shim/fdtab.c"

START_TEST(empty_table_is_all_kernel)
{
    struct shim_fdtab t = {0};
    /* Before the client attaches, every lookup misses: pure pass-through. */
    ck_assert_ptr_null(shim_fdtab_get(&t, 0));
    ck_assert_int_eq(shim_fdtab_kind(&t, 5), SHIM_FD_KERNEL);
    ck_assert_int_eq(shim_fdtab_kind(&t, -1), SHIM_FD_KERNEL);
    ck_assert_int_eq(shim_fdtab_limit(&t), 0);
}
END_TEST

START_TEST(set_get_clear)
{
    struct shim_fdtab t;
    ck_assert_int_eq(shim_fdtab_init(&t, 1024), 0);
    ck_assert_int_eq(shim_fdtab_kind(&t, 7), SHIM_FD_KERNEL);
    int obj;
    ck_assert_int_eq(shim_fdtab_set(&t, 7, SHIM_FD_SOCK, 3, 9, true, &obj), 0);
    struct shim_fd *e = shim_fdtab_get(&t, 7);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->slot, 3);
    ck_assert_int_eq(e->gen, 9);
    ck_assert_int_eq(e->cloexec, 1);
    ck_assert_ptr_eq(e->obj, &obj);
    ck_assert_int_eq(shim_fdtab_limit(&t), 8);
    /* Neighbours stay the kernel's. */
    ck_assert_int_eq(shim_fdtab_kind(&t, 6), SHIM_FD_KERNEL);
    ck_assert_int_eq(shim_fdtab_kind(&t, 8), SHIM_FD_KERNEL);
    shim_fdtab_clear(&t, 7);
    ck_assert_ptr_null(shim_fdtab_get(&t, 7));
    /* The high-water mark only grows: scans stay bounded but never miss an fd. */
    ck_assert_int_eq(shim_fdtab_limit(&t), 8);
    shim_fdtab_destroy(&t);
}
END_TEST

START_TEST(bounds)
{
    struct shim_fdtab t;
    ck_assert_int_eq(shim_fdtab_init(&t, 16), 0);
    ck_assert_int_eq(shim_fdtab_set(&t, 16, SHIM_FD_SOCK, 0, 0, false, NULL), -EMFILE);
    ck_assert_int_eq(shim_fdtab_set(&t, -1, SHIM_FD_SOCK, 0, 0, false, NULL), -EMFILE);
    ck_assert_int_eq(shim_fdtab_set(&t, 15, SHIM_FD_EPOLL, 0, 0, false, NULL), 0);
    ck_assert_int_eq(shim_fdtab_kind(&t, 15), SHIM_FD_EPOLL);
    ck_assert_int_eq(shim_fdtab_kind(&t, 16), SHIM_FD_KERNEL);
    ck_assert_int_eq(shim_fdtab_kind(&t, 1 << 30), SHIM_FD_KERNEL);
    shim_fdtab_clear(&t, 99); /* out of range: ignored */
    ck_assert_int_eq(shim_fdtab_init(&t, 0), -EINVAL);
}
END_TEST

START_TEST(dup_copies_with_own_cloexec)
{
    struct shim_fdtab t;
    ck_assert_int_eq(shim_fdtab_init(&t, 64), 0);
    ck_assert_int_eq(shim_fdtab_set(&t, 3, SHIM_FD_SOCK, 11, 2, true, NULL), 0);
    ck_assert_int_eq(shim_fdtab_dup(&t, 3, 40, false), 0);
    struct shim_fd *e = shim_fdtab_get(&t, 40);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->kind, SHIM_FD_SOCK);
    ck_assert_int_eq(e->slot, 11);
    ck_assert_int_eq(e->gen, 2);
    ck_assert_int_eq(e->cloexec, 0);
    ck_assert_int_eq(shim_fdtab_limit(&t), 41);
    ck_assert_int_eq(shim_fdtab_dup(&t, 4, 41, false), -EBADF);
    /* Re-setting an entry replaces it whole. */
    ck_assert_int_eq(shim_fdtab_set(&t, 40, SHIM_FD_PRIV, 0, 0, false, NULL), 0);
    ck_assert_int_eq(shim_fdtab_kind(&t, 40), SHIM_FD_PRIV);
    ck_assert_int_eq(shim_fdtab_get(&t, 40)->slot, 0);
    shim_fdtab_destroy(&t);
}
END_TEST

START_TEST(large_table_is_lazy)
{
    /* The hard RLIMIT_NOFILE can be a million or more: the mapping must not touch it all. */
    struct shim_fdtab t;
    ck_assert_int_eq(shim_fdtab_init(&t, 1u << 21), 0);
    ck_assert_int_eq(shim_fdtab_set(&t, (1 << 21) - 1, SHIM_FD_SOCK, 1, 1, false, NULL), 0);
    ck_assert_int_eq(shim_fdtab_kind(&t, (1 << 21) - 1), SHIM_FD_SOCK);
    shim_fdtab_destroy(&t);
}
END_TEST

/* ---- the hook list against preload/libustack.map ---- */

#define HOOK_NAME(ret, name, params) #name,
static const char *const hook_names[] = {USTACK_HOOKS(HOOK_NAME)};

static char *read_map(void)
{
    static const char *paths[] = {"preload/libustack.map", "../preload/libustack.map"};
    for (unsigned i = 0; i < 2; i++) {
        FILE *f = fopen(paths[i], "r");
        if (!f)
            continue;
        static char buf[16384];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        return buf;
    }
    return NULL;
}

START_TEST(map_exports_exactly_the_hooks)
{
    char *map = read_map();
    if (!map) {
        fprintf(stderr, "test_fdtab: preload/libustack.map not found from here; skipped\n");
        return;
    }
    unsigned nhooks = sizeof(hook_names) / sizeof(hook_names[0]);
    /* Every "name;" between "global:" and "local:" must be a hook, and every hook there. */
    char *g = strstr(map, "global:"), *l = strstr(map, "local:");
    ck_assert_ptr_nonnull(g);
    ck_assert_ptr_nonnull(l);
    *l = '\0';
    unsigned found = 0;
    for (char *tok = strtok(g + 7, " \t\n;"); tok; tok = strtok(NULL, " \t\n;")) {
        bool known = false;
        for (unsigned i = 0; i < nhooks && !known; i++)
            known = !strcmp(tok, hook_names[i]);
        ck_assert_msg(known, "libustack.map exports %s, which hooks.h does not list", tok);
        found++;
    }
    ck_assert_uint_eq(found, nhooks);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fdtab");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, empty_table_is_all_kernel);
    tcase_add_test(tc, set_get_clear);
    tcase_add_test(tc, bounds);
    tcase_add_test(tc, dup_copies_with_own_cloexec);
    tcase_add_test(tc, large_table_is_lazy);
    tcase_add_test(tc, map_exports_exactly_the_hooks);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
