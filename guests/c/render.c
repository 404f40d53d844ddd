// A C library with its own ABI, built with clang and wasi-libc as a reactor:
// it knows nothing of Cleanslate's data ABI. The host drives it through a
// session (crates/cleanslate/tests/guest_abi.rs, docs/ABI.md "A guest's own
// ABI"): malloc room, write the input and the template, call render, read
// the length through the out-pointer and the output, free nothing.
//
// Build: clang --target=wasm32-wasi -O2 -mexec-model=reactor \
//            -Wl,--export=malloc -Wl,--export=free -o render.wasm render.c
//
// char *render(const char *input, const char *format, uint32_t *out_len)
//   input   "key=value" lines
//   format  a template: text with {{key}}, {{key|upper}}, {{@n}} (how many
//           renders this instance has done, this one included) and
//           {{@cache}} ("hit" when this template was parsed by an earlier
//           render and came from the cache, "miss" otherwise)
//   returns the output, NUL-terminated, from malloc; its length (without
//           the NUL) in *out_len. NULL for a malformed template, with the
//           reason from render_error().
//
// The render counter, the parsed-template cache and the error message are
// static state: without a reset between calls, a later render would see
// what an earlier one left (a higher count, a cache hit, an old error).
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FORMAT 256
#define MAX_PARTS 64

enum kind { LITERAL, KEY, KEY_UPPER, COUNT, CACHE };

struct part {
    enum kind kind;
    const char *text; // into cached_format
    size_t len;
};

static unsigned renders;
static char cached_format[MAX_FORMAT];
static struct part parts[MAX_PARTS];
static int part_count = -1; // -1: nothing cached
static char error[128];

struct buffer {
    char *bytes;
    size_t len, cap;
};

static int append(struct buffer *b, const char *text, size_t len, int upper) {
    if (b->len + len + 1 > b->cap) {
        size_t cap = (b->len + len + 1) * 2;
        char *grown = realloc(b->bytes, cap);
        if (!grown) {
            return -1;
        }
        b->bytes = grown;
        b->cap = cap;
    }
    for (size_t i = 0; i < len; i++) {
        b->bytes[b->len++] = upper ? (char)toupper((unsigned char)text[i]) : text[i];
    }
    b->bytes[b->len] = 0;
    return 0;
}

static void fail(const char *why) {
    strncpy(error, why, sizeof error - 1);
    error[sizeof error - 1] = 0;
}

// Parse cached_format into parts; 0 on success.
static int parse(void) {
    int n = 0;
    const char *p = cached_format;
    while (*p) {
        if (n == MAX_PARTS) {
            fail("template has too many parts");
            return -1;
        }
        const char *open = strstr(p, "{{");
        if (open != p) {
            size_t len = open ? (size_t)(open - p) : strlen(p);
            parts[n++] = (struct part){LITERAL, p, len};
            p += len;
            continue;
        }
        const char *close = strstr(open + 2, "}}");
        if (!close) {
            fail("unterminated {{ in template");
            return -1;
        }
        const char *name = open + 2;
        size_t len = (size_t)(close - name);
        struct part part = {KEY, name, len};
        if (len == 2 && memcmp(name, "@n", 2) == 0) {
            part.kind = COUNT;
        } else if (len == 6 && memcmp(name, "@cache", 6) == 0) {
            part.kind = CACHE;
        } else if (len > 6 && memcmp(close - 6, "|upper", 6) == 0) {
            part = (struct part){KEY_UPPER, name, len - 6};
        } else if (len == 0) {
            fail("empty {{}} in template");
            return -1;
        }
        parts[n++] = part;
        p = close + 2;
    }
    part_count = n;
    return 0;
}

// The value of `key` in the "key=value" lines of `input`, or NULL.
static const char *lookup(const char *input, const char *key, size_t key_len, size_t *len) {
    const char *line = input;
    while (*line) {
        const char *end = strchr(line, '\n');
        size_t line_len = end ? (size_t)(end - line) : strlen(line);
        if (line_len > key_len && memcmp(line, key, key_len) == 0 && line[key_len] == '=') {
            *len = line_len - key_len - 1;
            return line + key_len + 1;
        }
        if (!end) {
            break;
        }
        line = end + 1;
    }
    return NULL;
}

__attribute__((export_name("render"))) char *render(const char *input, const char *format,
                                                     uint32_t *out_len) {
    renders++;
    *out_len = 0;
    if (strlen(format) >= MAX_FORMAT) {
        fail("template longer than 255 bytes");
        return NULL;
    }
    int hit = part_count >= 0 && strcmp(cached_format, format) == 0;
    if (!hit) {
        strcpy(cached_format, format);
        part_count = -1;
        if (parse() != 0) {
            return NULL;
        }
    }
    struct buffer out = {0};
    if (append(&out, "", 0, 0) != 0) {
        fail("out of memory");
        return NULL;
    }
    for (int i = 0; i < part_count; i++) {
        const struct part *part = &parts[i];
        const char *text = part->text;
        size_t len = part->len;
        char number[16];
        switch (part->kind) {
        case LITERAL:
            break;
        case KEY:
        case KEY_UPPER:
            text = lookup(input, part->text, part->len, &len);
            if (!text) {
                text = "";
                len = 0;
            }
            break;
        case COUNT: {
            unsigned n = renders;
            size_t at = sizeof number;
            do {
                number[--at] = (char)('0' + n % 10);
                n /= 10;
            } while (n);
            text = number + at;
            len = sizeof number - at;
            break;
        }
        case CACHE:
            text = hit ? "hit" : "miss";
            len = strlen(text);
            break;
        }
        if (append(&out, text, len, part->kind == KEY_UPPER) != 0) {
            fail("out of memory");
            return NULL;
        }
    }
    *out_len = (uint32_t)out.len;
    return out.bytes;
}

// Why the last render returned NULL ("" if none did).
__attribute__((export_name("render_error"))) const char *render_error(void) {
    return error;
}
