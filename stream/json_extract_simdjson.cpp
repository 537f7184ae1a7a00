/*
 * The simdjson engine of json_extract.h: On-Demand, one pass over the document.
 *
 * On-Demand checks only what it is asked to read: a skipped value is stepped over by counting
 * brackets, so `{"a":[1 2}` or `{"a":tru}` would pass, and a skipped string followed by a colon
 * is taken for a key. To refuse exactly what jansson refuses, the pass visits every value:
 * containers are iterated (which checks commas, colons and brackets), numbers and literals are
 * parsed, every string is consumed and those with a backslash are unescaped (which checks the
 * escapes), keys with a backslash too. Stage 1 has already checked UTF-8, control characters in
 * strings and unclosed strings over the whole input. Values the paths want are read on the
 * way; nothing is copied but the strings the paths want and keys or strings with escapes.
 *
 * The walk keeps its own stack (as deep as jansson allows), so a deeply nested document costs
 * no C stack. Only simdjson's error-code API is used; the try/catch at the C boundary is a
 * firewall, not a control path.
 */

#include "stream/json_extract_engine.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <locale.h>
#include <new>

#include <simdjson.h>

namespace od = simdjson::ondemand;

namespace
{

struct frame {
    ad_extract_node *node; /* NULL: the values below are only checked */
    bool object;
    bool started;
    size_t index;
    od::object_iterator fields;
    od::array_iterator elements;
};

} // namespace

struct ad_extract_simdjson {
    od::parser parser;
    char *buf = nullptr; /* the document, copied with SIMDJSON_PADDING zero bytes after it */
    size_t buf_size = 0;
    size_t max_bytes;
    locale_t c_locale = (locale_t)0; /* for the numbers strtod reads, as jansson does */
    frame stack[AD_EXTRACT_MAX_DEPTH];

    explicit ad_extract_simdjson(size_t max) noexcept : parser(max + 2), max_bytes(max)
    {
    }
};

extern "C" struct ad_extract_simdjson *ad_extract_simdjson_new(size_t max_bytes, char *errstr,
                                                               size_t errstr_size)
{
    ad_extract_simdjson *s = new (std::nothrow) ad_extract_simdjson(max_bytes);
    if (!s) {
        snprintf(errstr, errstr_size, "out of memory");
        return nullptr;
    }
    s->c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (!s->c_locale) {
        snprintf(errstr, errstr_size, "cannot create the C locale");
        delete s;
        return nullptr;
    }
    return s;
}

extern "C" void ad_extract_simdjson_destroy(struct ad_extract_simdjson *s)
{
    if (!s)
        return;
    if (s->c_locale)
        freelocale(s->c_locale);
    free(s->buf);
    delete s;
}

/* Room for len bytes of document (and padding) in the copy and in the parser. */
static bool reserve(ad_extract_simdjson *s, size_t len)
{
    if (len + simdjson::SIMDJSON_PADDING > s->buf_size) {
        /* Grow geometrically, so a slowly growing stream of sizes does not reallocate often. */
        size_t size = s->buf_size ? s->buf_size : 4096;
        while (size < len + simdjson::SIMDJSON_PADDING)
            size *= 2;
        size = std::min(size, s->max_bytes + 2 + simdjson::SIMDJSON_PADDING);
        char *buf = static_cast<char *>(realloc(s->buf, size));
        if (!buf)
            return false;
        s->buf = buf;
        s->buf_size = size;
    }
    if (len > s->parser.capacity()) {
        size_t capacity =
            std::max<size_t>(len, std::min(2 * s->parser.capacity(), s->max_bytes + 2));
        /* simdjson's depth counts the values inside the deepest container too. */
        if (s->parser.allocate(capacity, AD_EXTRACT_MAX_DEPTH + 2) != simdjson::SUCCESS)
            return false;
    }
    return true;
}

static void set(const ad_extract_node *node, struct ad_json_value *values, ad_json_type type)
{
    for (size_t i = 0; i < node->n_slots; i++)
        values[node->slots[i]].type = type;
}

static ad_extract_node *key_child(ad_extract_node *node, const char *key, size_t len, uint64_t run)
{
    for (size_t i = 0; i < node->n_children; i++) {
        ad_extract_node *c = &node->children[i];
        if (c->type == AD_JPATH_KEY && c->key_len == len && memcmp(c->key, key, len) == 0) {
            if (c->seen == run)
                return nullptr; /* a duplicate: the first occurrence counts */
            c->seen = run;
            return c;
        }
    }
    return nullptr;
}

static ad_extract_node *index_child(ad_extract_node *node, size_t index)
{
    for (size_t i = 0; i < node->n_children; i++)
        if (node->children[i].type == AD_JPATH_INDEX && node->children[i].index == index)
            return &node->children[i];
    return nullptr;
}

/*
 * Checks the key of field and returns the child of node it names (NULL when none, or when node
 * is NULL). Keys without a backslash are compared as they are; the others are unescaped first.
 */
static int field_key(od::field &field, const char *end, ad_extract_node *node, uint64_t run,
                     ad_extract_node **child)
{
    const char *key = field.key().raw();
    const char *p = key;
    /* Stage 1 has found the closing quote; end only guards against a broken promise. */
    while (p < end && *p != '"' && *p != '\\')
        p++;
    if (p == end)
        return -1;
    size_t len = static_cast<size_t>(p - key);
    if (*p == '\\') {
        std::string_view unescaped;
        if (field.unescaped_key().get(unescaped) != simdjson::SUCCESS)
            return -1;
        /* jansson refuses "\u0000" in keys; no path can name such a key anyway. */
        if (memchr(unescaped.data(), '\0', unescaped.size()))
            return -1;
        key = unescaped.data();
        len = unescaped.size();
    }
    *child = node && node->has_keys ? key_child(node, key, len, run) : nullptr;
    return 0;
}

/* The JSON number grammar, for the few numbers that simdjson refuses and strtod reads. */
static bool is_json_number(const char *p, const char *end)
{
    if (p < end && *p == '-')
        p++;
    if (p == end || !isdigit((unsigned char)*p))
        return false;
    if (*p == '0')
        p++;
    else
        while (p < end && isdigit((unsigned char)*p))
            p++;
    if (p < end && *p == '.') {
        const char *digits = ++p;
        while (p < end && isdigit((unsigned char)*p))
            p++;
        if (p == digits)
            return false;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        const char *digits = p;
        while (p < end && isdigit((unsigned char)*p))
            p++;
        if (p == digits)
            return false;
    }
    return p == end;
}

/*
 * Numbers simdjson gets wrong or refuses, read with strtod as jansson does: "0." followed by
 * more than 19 digits, whose mantissa simdjson 3.0.1 lets wrap around (0.95000000000000000000
 * reads as 0.0277; simdjson issue #2093, fixed in 3.6.3), and exponents of 20 digits or more
 * (1e-00000000000000000001, 1e-99999999999999999999), which it refuses.
 */
static bool misread_by_simdjson(const char *p, const char *end)
{
    if (p < end && *p == '-')
        p++;
    if (end - p < 22 || p[0] != '0' || p[1] != '.')
        return false;
    const char *digits = p += 2;
    while (p < end && isdigit((unsigned char)*p))
        p++;
    return p - digits > 19;
}

static int number_strtod(ad_extract_simdjson *s, const char *p, const char *end, double *d)
{
    while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
        end--;
    if (!is_json_number(p, end))
        return -1;
    /* The copy is followed by a delimiter or by zero padding, where strtod stops. */
    char *stop;
    *d = strtod_l(p, &stop, s->c_locale);
    if (stop != end || std::isinf(*d))
        return -1;
    return 0;
}

static int scalar(ad_extract_simdjson *s, od::value &v, od::json_type type,
                  const ad_extract_node *node, struct ad_json_value *values)
{
    bool wanted = node && node->n_slots;
    switch (type) {
    case od::json_type::string: {
        std::string_view str;
        if (!wanted) {
            /*
             * Only escapes can be wrong in a string stage 1 accepted. The string is consumed
             * either way: skipping it would let simdjson take `"k":` in an array for a key.
             */
            std::string_view token = v.raw_json_token();
            if (!memchr(token.data() + 1, '\\', token.size() - 1)) {
                od::raw_json_string raw;
                return v.get_raw_json_string().get(raw) == simdjson::SUCCESS ? 0 : -1;
            }
        }
        if (v.get_string().get(str) != simdjson::SUCCESS)
            return -1;
        for (size_t i = 0; wanted && i < node->n_slots; i++) {
            struct ad_json_value *out = &values[node->slots[i]];
            out->type = AD_JSON_STRING;
            out->string = str.data();
            out->string_len = str.size();
        }
        return 0;
    }
    case od::json_type::number: {
        double d;
        std::string_view token = v.raw_json_token();
        const char *p = token.data(), *end = p + token.size();
        if (misread_by_simdjson(p, end)) {
            /* Left unconsumed: only a skipped string can be mistaken for a key. */
            if (number_strtod(s, p, end, &d) < 0)
                return -1;
        } else {
            simdjson::error_code err = v.get_double().get(d);
            if (err == simdjson::NUMBER_ERROR && number_strtod(s, p, end, &d) < 0)
                return -1;
            if (err != simdjson::SUCCESS && err != simdjson::NUMBER_ERROR)
                return -1;
        }
        for (size_t i = 0; wanted && i < node->n_slots; i++) {
            values[node->slots[i]].type = AD_JSON_NUMBER;
            values[node->slots[i]].number = d;
        }
        return 0;
    }
    case od::json_type::boolean: {
        bool b;
        if (v.get_bool().get(b) != simdjson::SUCCESS)
            return -1;
        for (size_t i = 0; wanted && i < node->n_slots; i++) {
            values[node->slots[i]].type = AD_JSON_BOOL;
            values[node->slots[i]].boolean = b;
        }
        return 0;
    }
    case od::json_type::null: {
        bool is_null;
        if (v.is_null().get(is_null) != simdjson::SUCCESS || !is_null)
            return -1;
        if (wanted)
            set(node, values, AD_JSON_NULL);
        return 0;
    }
    default:
        return -1;
    }
}

/*
 * Visits every value below the frame on top of the stack, filling the values the tree wants.
 * Returns the number of elements of the root container, or -1 when the document is malformed.
 */
static long walk(ad_extract_simdjson *s, const char *end, uint64_t run,
                 struct ad_json_value *values)
{
    frame *stack = s->stack;
    size_t depth = 1;
    long root_elements = 0;
    while (depth > 0) {
        frame *f = &stack[depth - 1];
        od::value v;
        ad_extract_node *child = nullptr;
        if (f->object) {
            if (f->started)
                ++f->fields;
            f->started = true;
            if (!(f->fields != f->fields)) { /* the iterator's end: the object is closed */
                depth--;
                continue;
            }
            od::field field;
            if ((*f->fields).get(field) != simdjson::SUCCESS ||
                field_key(field, end, f->node, run, &child) < 0)
                return -1;
            v = field.value();
        } else {
            if (f->started)
                ++f->elements;
            f->started = true;
            if (!(f->elements != f->elements)) {
                depth--;
                continue;
            }
            if ((*f->elements).get(v) != simdjson::SUCCESS)
                return -1;
            if (f->node)
                child = index_child(f->node, f->index);
            f->index++;
        }
        if (depth == 1)
            root_elements++;

        od::json_type type;
        if (v.type().get(type) != simdjson::SUCCESS)
            return -1;
        if (type != od::json_type::object && type != od::json_type::array) {
            if (scalar(s, v, type, child, values) < 0)
                return -1;
            continue;
        }
        if (depth == AD_EXTRACT_MAX_DEPTH)
            return -1;
        frame *next = &stack[depth++];
        next->object = type == od::json_type::object;
        next->started = false;
        next->index = 0;
        if (next->object) {
            od::object object;
            if (v.get_object().get(object) != simdjson::SUCCESS ||
                object.begin().get(next->fields) != simdjson::SUCCESS)
                return -1;
            next->node = child && child->has_keys ? child : nullptr;
        } else {
            od::array array;
            if (v.get_array().get(array) != simdjson::SUCCESS ||
                array.begin().get(next->elements) != simdjson::SUCCESS)
                return -1;
            next->node = child && child->has_indexes ? child : nullptr;
        }
        if (child)
            set(child, values, next->object ? AD_JSON_OBJECT : AD_JSON_ARRAY);
    }
    return root_elements;
}

static enum ad_extract_result run(ad_extract_simdjson *s, ad_extract_node *root, uint64_t run_id,
                                  const char *json, size_t len, struct ad_json_value *values)
{
    size_t start = 0;
    while (start < len && (json[start] == ' ' || json[start] == '\t' || json[start] == '\n' ||
                           json[start] == '\r'))
        start++;
    char first = start < len ? json[start] : '\0';
    /*
     * A scalar document is read as the only element of an array: simdjson reads root scalars
     * through a bounded buffer, and jansson reads them like any other value.
     */
    bool wrapped = first != '{' && first != '[';
    size_t doc_len = wrapped ? len + 2 : len;
    if (!reserve(s, doc_len))
        return AD_EXTRACT_MALFORMED;
    if (wrapped) {
        s->buf[0] = '[';
        memcpy(s->buf + 1, json, len);
        s->buf[len + 1] = ']';
    } else {
        memcpy(s->buf, json, len);
    }
    memset(s->buf + doc_len, 0, simdjson::SIMDJSON_PADDING);

    od::document doc;
    if (s->parser.iterate(s->buf, doc_len, s->buf_size).get(doc) != simdjson::SUCCESS)
        return AD_EXTRACT_MALFORMED;
    frame *f = &s->stack[0];
    f->started = false;
    f->index = 0;
    f->object = first == '{';
    if (f->object) {
        od::object object;
        if (doc.get_object().get(object) != simdjson::SUCCESS ||
            object.begin().get(f->fields) != simdjson::SUCCESS)
            return AD_EXTRACT_MALFORMED;
        f->node = root->has_keys ? root : nullptr;
        if (root->n_slots)
            set(root, values, AD_JSON_OBJECT);
    } else {
        od::array array;
        if (doc.get_array().get(array) != simdjson::SUCCESS ||
            array.begin().get(f->elements) != simdjson::SUCCESS)
            return AD_EXTRACT_MALFORMED;
        f->node = nullptr;
    }
    long elements = walk(s, s->buf + doc_len, run_id, values);
    if (elements < 0 || (wrapped && elements != 1))
        return AD_EXTRACT_MALFORMED;
    /* Nothing may follow the root value: at the end, the location is out of bounds. */
    if (doc.current_location().error() != simdjson::OUT_OF_BOUNDS)
        return AD_EXTRACT_MALFORMED;
    return f->object ? AD_EXTRACT_OK : AD_EXTRACT_NOT_OBJECT;
}

extern "C" enum ad_extract_result ad_extract_simdjson_run(struct ad_extract_simdjson *s,
                                                          struct ad_extract_node *root,
                                                          uint64_t run_id, const char *json,
                                                          size_t len, struct ad_json_value *values)
{
    try {
        return run(s, root, run_id, json, len, values);
    } catch (...) {
        return AD_EXTRACT_MALFORMED;
    }
}
