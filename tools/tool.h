/* tool.h - what the subcommands of the qcow2 command-line tool share.
 * The tool is a thin layer over include/qcow2.h that speaks qemu-img's syntax and prints
 * qemu-img's output formats. Nothing here knows the on-disk format: every image is reached
 * through the public API only. */
#ifndef QCOW2_TOOL_H
#define QCOW2_TOOL_H

#include <stdint.h>
#include <stdio.h>

#include "qcow2.h"

#define TOOL_NAME "qcow2"

/* Exit status of every subcommand: 0 on success, 1 on any error (as qemu-img). */
#define TOOL_EXIT_OK 0
#define TOOL_EXIT_ERROR 1

/* One subcommand. `run` receives argv[0] = the subcommand's name. Adding a subcommand is one
 * new tools/cmd_NAME.c (picked up by the build) plus one line in the table in tools/qcow2.c. */
struct tool_cmd {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

int cmd_create(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_io(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_resize(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_commit(int argc, char **argv);
int cmd_rebase(int argc, char **argv);

/* ---- messages ---------------------------------------------------------------------------- */

/* Print "qcow2: <message>" on one line of stderr. */
void tool_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Print "qcow2: warning: <message>" on one line of stderr (qemu's warn_report). */
void tool_warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Print "qcow2: <message>: <the image's error, or strerror(-ret)>". */
void tool_image_error(struct qcow2_image *img, int ret, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Print the image's last error (else strerror(-ret)) as "qcow2: <message>" without the
 * library's "PATH: " prefix when it names `path` itself: qemu-img's messages for the image a
 * command works on name no file. */
void tool_image_error_bare(struct qcow2_image *img, const char *path, int ret);

/* The end of a command on `img`: report `ret` (tool_image_error_bare) if it failed, close
 * the image (a failed close is a failure too). Returns ret, or -EIO when only the close
 * failed. */
int tool_finish(struct qcow2_image *img, const char *path, int ret);

/* Report a command-line mistake of subcommand `cmd` and return TOOL_EXIT_ERROR. */
int tool_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- parsing ----------------------------------------------------------------------------- */

/* A size with optional suffix, via qcow2_parse_size. Prints the error itself; returns 0 or
 * -EINVAL. `what` names the value in the message ("image size", "-S"). */
int tool_parse_size(const char *s, const char *what, uint64_t *out);

/* "qcow2" or "raw" (and NULL for "probe"). Prints the error itself. */
int tool_parse_format(const char *s, enum qcow2_format *fmt);
const char *tool_format_name(enum qcow2_format fmt);

enum tool_output { TOOL_OUTPUT_HUMAN, TOOL_OUTPUT_JSON };
int tool_parse_output(const char *s, enum tool_output *out);

/* Append "-o" argument `arg` to the comma-separated list *list (qemu-img accepts -o several
 * times). Returns 0 or -ENOMEM. */
int tool_append_options(char **list, const char *arg);

/* True when a "-o" list asks for help ("help" or "?" as one of its items). */
int tool_options_want_help(const char *list);

/* The first key of the "-o" list `list` that is not in `allowed` (a NULL-terminated array),
 * as a malloc'ed string; NULL when all keys are allowed (or on allocation failure, when the
 * check is skipped and the library's parser has the last word). Handles ",," escapes. */
char *tool_options_unknown_key(const char *list, const char *const *allowed);

/* ---- images ------------------------------------------------------------------------------ */

#define TOOL_OPEN_WRITABLE 0x1u
#define TOOL_OPEN_NO_BACKING 0x2u

/* Open `path` with format `fmt`. On failure prints the error and returns -errno. */
int tool_open(const char *path, enum qcow2_format fmt, unsigned flags,
              struct qcow2_image **img);

/* As tool_open, but prints nothing: on failure the reason (without the file name) is left
 * in `msg`. */
int tool_open_quiet(const char *path, enum qcow2_format fmt, unsigned flags,
                    struct qcow2_image **img, char *msg, size_t msglen);

/* Close and report a failure to close (a failed flush loses data). Returns 0 or -errno. */
int tool_close(struct qcow2_image *img, const char *path);

/* qemu's path_combine(): `name` relative to the directory of `base` ("dir/base" + "x" ->
 * "dir/x"; absolute names and bases without '/' leave `name` as is). Returns a malloc'ed
 * string or NULL. */
char *tool_path_combine(const char *base, const char *name);

/* ---- output ------------------------------------------------------------------------------ */

/* qemu-img's -p line, "    (NN.NN/100%)\r", reprinted when the percentage has moved by more
 * than `min_skip` (1 for commit, 2 for rebase, as qemu-img), ended by a newline. Printed on
 * stdout only when it is a terminal (qemu-img prints it anywhere; a log is better without).
 * tool_progress_update has the shape of qcow2_progress_fn (opaque = the struct). */
struct tool_progress {
    int on;
    double min_skip;
    double last;
};

void tool_progress_init(struct tool_progress *p, int wanted, double min_skip);
void tool_progress_update(void *opaque, uint64_t done, uint64_t total);
void tool_progress_end(struct tool_progress *p);

/* ImageInfoSpecificQCow2 (qemu-img info's "format-specific" data) as (key, value) pairs in the
 * order QEMU's QDict prints them. Returns how many were stored in `f` (TOOL_SPEC_MAX room). */
enum tool_spec_kind { TOOL_SPEC_STR, TOOL_SPEC_INT, TOOL_SPEC_BOOL };

struct tool_spec_field {
    const char *key;
    enum tool_spec_kind kind;
    const char *s;
    int64_t i;
};

#define TOOL_SPEC_MAX 16
int tool_qcow2_specific(const struct qcow2_info *in, struct tool_spec_field *f);

/* The same pairs as qemu-img info and qemu-io info print them, one "INDENTkey: value" line
 * each, keys spelled with spaces ("lazy refcounts: false"). */
void tool_print_format_specific(const struct qcow2_info *in, const char *indent);

/* qemu's size_to_str(): "4.25 MiB", "196 KiB", "0 B". */
void tool_human_size(char *buf, size_t len, uint64_t val);

/* Print `s` as a JSON string exactly as QEMU's QObject serializer does: quotes, the usual
 * backslash escapes, \uXXXX (upper-case hex) for control and non-ASCII characters,
 * surrogate pairs beyond the BMP and U+FFFD for invalid UTF-8. */
void tool_json_string(FILE *f, const char *s);

/* A small pretty-printer with QEMU's layout (4-space indent, "key": value). Keys are printed
 * in the order the caller emits them; the caller reproduces QEMU's (hash-table) order. */
struct tool_json {
    FILE *f;
    int depth;
    int count[16]; /* members printed so far at each depth */
};

void tool_json_init(struct tool_json *j, FILE *f);
void tool_json_begin_object(struct tool_json *j, const char *key); /* key NULL: no key */
void tool_json_end_object(struct tool_json *j);
void tool_json_begin_array(struct tool_json *j, const char *key);
void tool_json_end_array(struct tool_json *j);
void tool_json_str(struct tool_json *j, const char *key, const char *val);
void tool_json_int(struct tool_json *j, const char *key, int64_t val);
void tool_json_bool(struct tool_json *j, const char *key, int val);
/* Ends the document with a newline. */
void tool_json_finish(struct tool_json *j);

#endif /* QCOW2_TOOL_H */
