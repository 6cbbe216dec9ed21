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
int cmd_compare(int argc, char **argv);
int cmd_measure(int argc, char **argv);
int cmd_dd(int argc, char **argv);
int cmd_amend(int argc, char **argv);
int cmd_compact(int argc, char **argv);
int cmd_bitmap(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
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
 * times). Returns 0, or -ENOMEM after printing the error. */
int tool_append_options(char **list, const char *arg);

/* True when a "-o" list asks for help ("help" or "?" as one of its items). */
int tool_options_want_help(const char *list);

/* The first key of the "-o" list `list` that is not in `allowed` (a NULL-terminated array),
 * as a malloc'ed string; NULL when all keys are allowed (or on allocation failure, when the
 * check is skipped and the library's parser has the last word). Handles ",," escapes. */
char *tool_options_unknown_key(const char *list, const char *const *allowed);

/* Take the next item off the "-o" list at *cursor (modified in place: ",," becomes ','):
 * returns its key and sets *value (NULL for a bare key), or returns NULL at the end. */
char *tool_options_next(char **cursor, char **value);

/* ---- images ------------------------------------------------------------------------------ */

#define TOOL_OPEN_WRITABLE 0x1u
#define TOOL_OPEN_NO_BACKING 0x2u
#define TOOL_OPEN_INSPECT 0x4u /* describe only: no other file opened, no guest I/O */

/* Open `path` with format `fmt`. On failure prints the error and returns -errno. */
int tool_open(const char *path, enum qcow2_format fmt, unsigned flags,
              struct qcow2_image **img);

/* As tool_open, but prints nothing: on failure the reason (without the file name) is left
 * in `msg`. */
int tool_open_quiet(const char *path, enum qcow2_format fmt, unsigned flags,
                    struct qcow2_image **img, char *msg, size_t msglen);

/* --untrusted and --allow-dir=DIR, the same two options on every subcommand that opens an
 * image a user may have supplied (info, map, check, convert, io). Untrusted mode
 * (include/qcow2.h, "Untrusted images"): regular files only, smaller limits, no backing or
 * data file outside DIR (none at all without --allow-dir). --allow-dir alone only confines. */
struct tool_trust {
    int untrusted;
    const char *allow_dir;
};

enum { TOOL_OPT_UNTRUSTED = 0x1000, TOOL_OPT_ALLOW_DIR };
#define TOOL_TRUST_LONGOPTS                                     \
    { "untrusted", no_argument, NULL, TOOL_OPT_UNTRUSTED },     \
    { "allow-dir", required_argument, NULL, TOOL_OPT_ALLOW_DIR }
#define TOOL_TRUST_HELP                                                                       \
    "  --untrusted        the image comes from an untrusted source: refuse devices, FIFOs,\n" \
    "                     sockets, oversized tables and any backing or data file outside\n"  \
    "                     --allow-dir (any at all without it)\n"                              \
    "  --allow-dir=DIR    backing and data files must resolve beneath DIR (no symlink out)\n"

/* Take getopt's option `c` if it is one of the two: 1 (taken) or 0. */
int tool_trust_option(struct tool_trust *t, int c, const char *arg);
/* Set the open options they stand for (nothing for a NULL `t`). */
void tool_trust_apply(const struct tool_trust *t, struct qcow2_open_opts *o);

/* tool_open with the trust options `t` (may be NULL). */
int tool_open_trust(const char *path, enum qcow2_format fmt, unsigned flags,
                    const struct tool_trust *t, struct qcow2_image **img);
/* Open internal snapshot `param` of `path` read-only: qemu-img's -l syntax,
 * "snapshot.id=ID[,snapshot.name=NAME]" or a bare ID_OR_NAME (the ID first, then the name).
 * With the trust options `t` (may be NULL). Prints qemu-img's messages on failure and returns
 * -errno. */
int tool_open_snapshot(const char *path, enum qcow2_format fmt, const char *param,
                       const struct tool_trust *t, struct qcow2_image **img);

/* Close and report a failure to close (a failed flush loses data). Returns 0 or -errno. */
int tool_close(struct qcow2_image *img, const char *path);

/* qemu's path_combine(): `name` relative to the directory of `base` ("dir/base" + "x" ->
 * "dir/x"; absolute names and bases without '/' leave `name` as is). Returns a malloc'ed
 * string or NULL. */
char *tool_path_combine(const char *base, const char *name);

/* ---- progress (-p) ------------------------------------------------------------------------ */

/* qemu-img's progress line (util/qemu-progress.c): "    (NN.NN/100%)\r" on stdout, printed
 * again when the percentage has moved by more than `min_skip` points (and at 0 and 100), and a
 * newline at the end. Shown only when asked for (-p without -q) and stdout is a terminal:
 * qemu-img also prints it into pipes and files, where it is noise. Usage:
 *
 *     struct tool_progress p;
 *     tool_progress_init(&p, progress && !quiet, 2.0f);
 *     qcow2_compare(a, b, 0, &res, tool_progress_cb, &p);   (any qcow2_progress_fn)
 *     ...print the verdict...
 *     tool_progress_end(&p);
 *
 * QEMU's min_skip: 1.0 for convert, commit and amend, 2.0 for compare and rebase. */
struct tool_progress {
    int enabled;
    float min_skip;
    float current;    /* percent */
    float last_print; /* percent at the last print */
};

void tool_progress_init(struct tool_progress *p, int requested, float min_skip);
/* Set the absolute percentage (0..100; larger values count as 100). */
void tool_progress_set(struct tool_progress *p, float percent);
/* A qcow2_progress_fn: `opaque` is a struct tool_progress; sets done/total as a percentage. */
void tool_progress_cb(void *opaque, uint64_t done, uint64_t total);
/* Ends the line (only if the progress was shown). */
void tool_progress_end(struct tool_progress *p);

/* ---- output ------------------------------------------------------------------------------ */

/* ImageInfoSpecificQCow2 (qemu-img info's "format-specific" data) as (key, value) pairs in the
 * order QEMU's QDict prints them. Returns how many were stored in `f` (TOOL_SPEC_MAX room). */
enum tool_spec_kind { TOOL_SPEC_STR, TOOL_SPEC_INT, TOOL_SPEC_BOOL, TOOL_SPEC_BITMAPS };

struct tool_spec_field {
    const char *key;
    enum tool_spec_kind kind;
    const char *s;
    int64_t i;
    struct qcow2_image *img; /* TOOL_SPEC_BITMAPS: the image whose bitmaps are listed */
};

#define TOOL_SPEC_MAX 16
int tool_qcow2_specific(struct qcow2_image *img, const struct qcow2_info *in,
                        struct tool_spec_field *f);

/* The same pairs as qemu-img info and qemu-io info print them, one "INDENTkey: value" line
 * each, keys spelled with spaces ("lazy refcounts: false"). */
void tool_print_format_specific(struct qcow2_image *img, const struct qcow2_info *in,
                                const char *indent);

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

/* The "bitmaps" value of format-specific data, as QEMU's JSON prints it (a list of
 * {"flags": ["in-use", "auto"], "name": ..., "granularity": ...}). */
void tool_json_bitmaps(struct tool_json *j, struct qcow2_image *img);
/* The snapshot table as qemu-img snapshot -l and info print it ("Snapshot list:", the header,
 * one row each, dates in local time); nothing without snapshots. Returns 0 or -errno. */
/* qemu-img copies a snapshot's name into a 256-byte buffer and its ID into a 128-byte one
 * (QEMUSnapshotInfo), for -c and for every listing: longer ones are cut to these bytes. */
#define TOOL_SNAPSHOT_NAME_MAX 255
#define TOOL_SNAPSHOT_ID_MAX 127
int tool_print_snapshots(struct qcow2_image *img);
/* qemu-img's warning on opening an image with disowned bitmaps (info.bitmaps_inconsistent). */
void tool_warn_disowned_bitmaps(const struct qcow2_info *in);
/* qemu-img info's "snapshots" array (nothing without snapshots). Returns 0 or -errno. */
int tool_json_snapshots(struct tool_json *j, struct qcow2_image *img);

#endif /* QCOW2_TOOL_H */
