/* YAML to jansson: scalar resolution, positions and paths. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "config/yaml_tree.h"

static json_t *read_yaml(const char *text, json_t *index)
{
    struct ad_diag *diag = ad_diag_new();
    json_t *root = ad_yaml_read("t.yaml", text, strlen(text), index, diag);
    if (!root)
        ad_diag_print(diag, stderr);
    ad_diag_destroy(diag);
    return root;
}

static void test_core_schema_resolution(void **state)
{
    (void)state;
    json_t *index = json_object();
    json_t *root = read_yaml("n1: ~\nn2: null\nn3:\nb1: true\nb2: False\ns1: yes\ns2: 'true'\n"
                             "i1: 42\ni2: -7\ni3: 0x1F\ni4: 0o17\ni5: +3\nf1: 1.5\nf2: -2e3\n"
                             "f3: .5\ns3: .inf\ns4: 1_000\ns5: \"42\"\ns6: 30s\ns7: |\n  block\n",
                             index);
    assert_non_null(root);
    assert_true(json_is_null(json_object_get(root, "n1")));
    assert_true(json_is_null(json_object_get(root, "n2")));
    assert_true(json_is_null(json_object_get(root, "n3")));
    assert_true(json_is_true(json_object_get(root, "b1")));
    assert_true(json_is_false(json_object_get(root, "b2")));
    assert_string_equal(json_string_value(json_object_get(root, "s1")), "yes");
    assert_string_equal(json_string_value(json_object_get(root, "s2")), "true");
    assert_int_equal(json_integer_value(json_object_get(root, "i1")), 42);
    assert_int_equal(json_integer_value(json_object_get(root, "i2")), -7);
    assert_int_equal(json_integer_value(json_object_get(root, "i3")), 31);
    assert_int_equal(json_integer_value(json_object_get(root, "i4")), 15);
    assert_int_equal(json_integer_value(json_object_get(root, "i5")), 3);
    assert_true(json_real_value(json_object_get(root, "f1")) == 1.5);
    assert_true(json_real_value(json_object_get(root, "f2")) == -2000);
    assert_true(json_real_value(json_object_get(root, "f3")) == 0.5);
    assert_string_equal(json_string_value(json_object_get(root, "s3")), ".inf");
    assert_string_equal(json_string_value(json_object_get(root, "s4")), "1_000");
    assert_string_equal(json_string_value(json_object_get(root, "s5")), "42");
    assert_string_equal(json_string_value(json_object_get(root, "s6")), "30s");
    assert_string_equal(json_string_value(json_object_get(root, "s7")), "block\n");

    struct ad_yaml_pos pos;
    assert_int_equal(ad_yaml_position(index, "i3", &pos), 0);
    assert_string_equal(pos.raw, "0x1F");
    assert_int_equal(pos.style, AD_YAML_PLAIN);
    assert_int_equal(ad_yaml_position(index, "s5", &pos), 0);
    assert_int_equal(pos.style, AD_YAML_QUOTED);
    assert_int_equal(ad_yaml_position(index, "s7", &pos), 0);
    assert_int_equal(pos.style, AD_YAML_BLOCK);
    json_decref(root);
    json_decref(index);
}

static void test_positions_and_paths(void **state)
{
    (void)state;
    json_t *index = json_object();
    json_t *root = read_yaml("sources:\n"
                             "  - name: a\n"
                             "    labels:\n"
                             "      \"app.kubernetes.io/name\": x\n"
                             "      plain-key: [p, q]\n",
                             index);
    assert_non_null(root);
    struct ad_yaml_pos pos;
    assert_int_equal(ad_yaml_position(index, "sources[0].name", &pos), 0);
    assert_int_equal(pos.key_line, 2);
    assert_int_equal(pos.key_column, 5);
    assert_int_equal(pos.line, 2);
    assert_int_equal(pos.column, 11);
    assert_int_equal(ad_yaml_position(index, "sources[0].labels[\"app.kubernetes.io/name\"]", &pos),
                     0);
    assert_int_equal(pos.key_line, 4);
    assert_int_equal(pos.key_column, 7);
    assert_int_equal(pos.column, 33);
    assert_int_equal(ad_yaml_position(index, "sources[0].labels.plain-key[1]", &pos), 0);
    assert_int_equal(pos.line, 5);
    assert_int_equal(pos.column, 22);
    assert_int_equal(ad_yaml_position(index, "sources[1]", &pos), -1);
    json_decref(root);
    json_decref(index);
}

static void test_path_building(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(ad_yaml_path_key(out, sizeof out, "", "daemon"), 0);
    assert_string_equal(out, "daemon");
    assert_int_equal(ad_yaml_path_key(out, sizeof out, "a", "b-c_1"), 0);
    assert_string_equal(out, "a.b-c_1");
    assert_int_equal(ad_yaml_path_key(out, sizeof out, "a", "x.y \"z\""), 0);
    assert_string_equal(out, "a[\"x.y \\\"z\\\"\"]");
    assert_int_equal(ad_yaml_path_index(out, sizeof out, "list", 12), 0);
    assert_string_equal(out, "list[12]");
    assert_int_equal(ad_yaml_path_key(out, 8, "abcdef", "ghi"), -1);
}

static void test_aliases_share_values(void **state)
{
    (void)state;
    json_t *index = json_object();
    json_t *root = read_yaml("a: &x {k: [1, 2]}\nb: *x\n", index);
    assert_non_null(root);
    assert_true(json_equal(json_object_get(root, "a"), json_object_get(root, "b")));
    struct ad_yaml_pos pos;
    /* The alias' value is positioned where the anchor's node is written. */
    assert_int_equal(ad_yaml_position(index, "b.k[1]", &pos), 0);
    assert_int_equal(pos.line, 1);
    assert_int_equal(pos.key_line, 1);
    json_decref(root);
    json_decref(index);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_core_schema_resolution),
        cmocka_unit_test(test_positions_and_paths),
        cmocka_unit_test(test_path_building),
        cmocka_unit_test(test_aliases_share_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
