// A WASI command built with clang and wasi-libc (Debian's packages): it
// proves a non-Rust toolchain's guest runs under Cleanslate, and exercises
// stdio capture, args, env, exit codes and the filesystem sandbox.
//
// Build: clang --target=wasm32-wasi -O2 -o wasi_tool.wasm wasi_tool.c
// Usage (argv[1] picks the mode):
//   echo   stdin upper-cased to stdout, args and $GREETING to stdout, a note
//          to stderr; exits with $EXIT_CODE (default 0)
//   passwd tries to open /etc/passwd; exits 0 if it could, 3 if not
//   read   prints /data/in.txt
//   write  tries to create /data/out.txt; exits 0 if it could, 4 if not
//   leak   prints what an earlier run left in a static buffer, then leaves
//          a secret there (a clean slate prints nothing)
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char left_behind[64];

static int echo(int argc, char **argv) {
    int c;
    while ((c = getchar()) != EOF) {
        putchar(toupper(c));
    }
    for (int i = 0; i < argc; i++) {
        printf("arg[%d]=%s\n", i, argv[i]);
    }
    const char *greeting = getenv("GREETING");
    printf("greeting=%s\n", greeting ? greeting : "(unset)");
    fprintf(stderr, "note: echo done\n");
    const char *code = getenv("EXIT_CODE");
    return code ? atoi(code) : 0;
}

static int open_passwd(void) {
    FILE *f = fopen("/etc/passwd", "r");
    if (!f) {
        printf("cannot open /etc/passwd: %s\n", strerror(errno));
        return 3;
    }
    printf("opened /etc/passwd\n");
    fclose(f);
    return 0;
}

static int read_data(void) {
    FILE *f = fopen("/data/in.txt", "r");
    if (!f) {
        printf("cannot open /data/in.txt: %s\n", strerror(errno));
        return 5;
    }
    char line[256];
    while (fgets(line, sizeof line, f)) {
        fputs(line, stdout);
    }
    fclose(f);
    return 0;
}

static int write_data(void) {
    FILE *f = fopen("/data/out.txt", "w");
    if (!f) {
        printf("cannot create /data/out.txt: %s\n", strerror(errno));
        return 4;
    }
    fputs("written\n", f);
    fclose(f);
    printf("created /data/out.txt\n");
    return 0;
}

static int leak(void) {
    printf("left behind: [%s]\n", left_behind);
    strcpy(left_behind, "secret of an earlier run");
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "echo";
    if (strcmp(mode, "echo") == 0) return echo(argc, argv);
    if (strcmp(mode, "passwd") == 0) return open_passwd();
    if (strcmp(mode, "read") == 0) return read_data();
    if (strcmp(mode, "write") == 0) return write_data();
    if (strcmp(mode, "leak") == 0) return leak();
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
