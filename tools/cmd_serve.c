/* cmd_serve.c - "qcow2 serve": export an image over NBD by running nbdkit with our plugin
 * (tools/nbdkit-plugin.c). Builds nbdkit's command line, prints the NBD URI and execs nbdkit,
 * which then owns the process: Ctrl-C (or SIGTERM to our pid) stops it and closes the image.
 * With --background, runs nbdkit as a child instead and returns once it has daemonized.
 * Opens the image only to report an unusable one early; all I/O goes through the plugin. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tool.h"

#define SERVE_PLUGIN_NAME "nbdkit-qcow2-plugin.so"
#define SERVE_PLUGIN_ENV "QCOW2_NBDKIT_PLUGIN"
#define SERVE_NBDKIT "nbdkit"
#define SERVE_DEFAULT_PORT 10809 /* IANA's port for NBD, qemu-nbd's default */
#define SERVE_DEFAULT_THREADS 16 /* nbdkit's default */
#define SERVE_ADDRESS "127.0.0.1"
#define SERVE_MAX_ARGS 32
#define SERVE_PIDFILE_WAIT_MS 10000

static void serve_usage(FILE *f)
{
    fprintf(f,
            "usage: " TOOL_NAME " serve IMAGE [--socket PATH | --port N] [--readonly]\n"
            "                   [-e CONNECTIONS] [--no-backing] [--cache-size SIZE]\n"
            "                   [--threads N] [--foreground | --background [--pidfile FILE]]\n"
            "                   [--untrusted [--allow-dir=DIR]]\n"
            "\n"
            "Export IMAGE (qcow2 or raw, with its backing chain) over NBD. Runs nbdkit with the\n"
            "libqcow2 plugin and prints the URI it serves on stdout; clients may connect several\n"
            "times at once (multi-conn): a flush on one connection covers writes on all.\n"
            "\n"
            "  -k, --socket PATH      listen on the Unix socket PATH (nbd+unix:///?socket=PATH)\n"
            "  -p, --port N           listen on TCP port N of " SERVE_ADDRESS
            " only (default %d)\n"
            "  -r, --readonly         export read-only (the image is opened read-only)\n"
            "  -e, --shared N         accept at most N clients at once (default: no limit;\n"
            "                         qemu-nbd's default is 1). Uses nbdkit's limit filter\n"
            "      --no-backing       do not open the backing chain: unallocated ranges read\n"
            "                         zeros\n"
            "      --cache-size SIZE  L2 cache size (default: enough for the disk, <= 32 MiB)\n"
            "      --threads N        requests served in parallel per connection (default %d)\n"
            "  -f, --foreground       stay in the foreground until Ctrl-C (the default)\n"
            "      --background       return once the server is listening (and FILE written);\n"
            "                         stop it with kill $(cat FILE)\n"
            "      --pidfile FILE     write the server's pid to FILE\n"
            TOOL_TRUST_HELP
            "                     (passed to the plugin as untrusted=1 allow-dir=DIR)\n"
            "\n"
            "Environment: " SERVE_PLUGIN_ENV " = the plugin to load (default: " SERVE_PLUGIN_NAME
            "\n"
            "next to this program). Needs nbdkit (Debian: apt-get install nbdkit).\n",
            SERVE_DEFAULT_PORT, SERVE_DEFAULT_THREADS);
}

/* The directory holding this executable, as a malloc'ed string, or NULL. */
static char *exe_dir(void)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    char *slash;

    if (n <= 0) {
        return NULL;
    }
    buf[n] = '\0';
    slash = strrchr(buf, '/');
    if (!slash) {
        return NULL;
    }
    *slash = '\0';
    return strdup(buf[0] ? buf : "/");
}

static int is_regular_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

#ifndef SERVE_PLUGIN_DIR
#define SERVE_PLUGIN_DIR "lib/nbdkit/plugins"
#endif

/* The plugin: $QCOW2_NBDKIT_PLUGIN, else next to this program (the build tree), else in
 * SERVE_PLUGIN_DIR (the install directory, relative to the prefix: ../SERVE_PLUGIN_DIR of
 * this program's directory, or absolute). Prints the error itself. */
static char *find_plugin(void)
{
    static const char *const rel[] = { "/" SERVE_PLUGIN_NAME,
                                       "/../" SERVE_PLUGIN_DIR "/" SERVE_PLUGIN_NAME };
    const char *env = getenv(SERVE_PLUGIN_ENV);
    char *dir, *path = NULL;

    if (env && *env) {
        if (is_regular_file(env)) {
            return strdup(env);
        }
        tool_error("the nbdkit plugin %s (from $" SERVE_PLUGIN_ENV ") does not exist", env);
        return NULL;
    }
    dir = exe_dir();
    if (dir) {
        for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
            path = malloc(strlen(dir) + strlen(rel[i]) + 1);
            if (!path) {
                break;
            }
            strcpy(path, dir);
            strcat(path, rel[i]);
            if (is_regular_file(path)) {
                free(dir);
                return path;
            }
            free(path);
            path = NULL;
        }
    }
    if (SERVE_PLUGIN_DIR[0] == '/' && is_regular_file(SERVE_PLUGIN_DIR "/" SERVE_PLUGIN_NAME)) {
        free(dir);
        return strdup(SERVE_PLUGIN_DIR "/" SERVE_PLUGIN_NAME);
    }
    tool_error("the nbdkit plugin " SERVE_PLUGIN_NAME " was not found in %s (build it with "
               "nbdkit-plugin-dev installed, or set " SERVE_PLUGIN_ENV ")",
               dir ? dir : "this program's directory");
    free(dir);
    return NULL;
}

/* Is `name` an executable file in $PATH? */
static int in_path(const char *name)
{
    const char *p = getenv("PATH");
    char buf[PATH_MAX];

    if (!p) {
        p = "/usr/bin:/bin";
    }
    while (*p) {
        size_t len = strcspn(p, ":");
        int n = snprintf(buf, sizeof(buf), "%.*s/%s", (int)len, len ? p : ".", name);
        if (n > 0 && (size_t)n < sizeof(buf) && access(buf, X_OK) == 0) {
            return 1;
        }
        p += len;
        if (*p == ':') {
            p++;
        }
    }
    return 0;
}

/* `path` made absolute against the working directory (malloc'ed), so that the URI printed
 * works from anywhere. */
static char *absolute_path(const char *path)
{
    char cwd[PATH_MAX];
    char *out;

    if (path[0] == '/') {
        return strdup(path);
    }
    if (!getcwd(cwd, sizeof(cwd))) {
        return NULL;
    }
    out = malloc(strlen(cwd) + strlen(path) + 2);
    if (out) {
        sprintf(out, "%s/%s", cwd, path);
    }
    return out;
}

/* Print `s` percent-encoded for the query part of a URI (RFC 3986 unreserved and '/' kept). */
static void print_uri_escaped(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            strchr("-._~/", c)) {
            putchar(c);
        } else {
            printf("%%%02X", c);
        }
    }
}

/* nbdkit leaves its socket file behind when it stops. Remove such a stale socket (nobody
 * answers on it); refuse a live one and anything that is not a socket. */
static int clear_stale_socket(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct stat st;
    int fd, ret;

    if (lstat(path, &st) < 0) {
        return errno == ENOENT ? 0 : -errno;
    }
    if (!S_ISSOCK(st.st_mode)) {
        tool_error("%s exists and is not a socket", path);
        return -EEXIST;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    strcpy(sa.sun_path, path); /* length checked by the caller */
    ret = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    close(fd);
    if (ret == 0) {
        tool_error("%s: a server is already listening on this socket", path);
        return -EADDRINUSE;
    }
    if (unlink(path) < 0) {
        tool_error("%s: cannot remove the stale socket: %s", path, strerror(errno));
        return -errno;
    }
    return 0;
}

static void print_uri(const char *sock, long port)
{
    if (sock) {
        fputs("nbd+unix:///?socket=", stdout);
        print_uri_escaped(sock);
        putchar('\n');
    } else {
        printf("nbd://" SERVE_ADDRESS ":%ld\n", port);
    }
    fflush(stdout);
}

/* Has nbdkit finished writing its pid file ("PID\n")? */
static int pidfile_written(const char *path)
{
    char buf[32];
    FILE *f = fopen(path, "r");
    size_t n;

    if (!f) {
        return 0;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    return n > 0 && buf[n - 1] == '\n';
}

/* Run nbdkit (without -f) and wait for it to daemonize, then for its pid file. nbdkit prints
 * its own errors. Returns 0 or -1. */
static int run_nbdkit_background(char **args, const char *pidfile)
{
    int status, i;
    pid_t pid;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        tool_error("fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        execvp(SERVE_NBDKIT, args);
        tool_error("could not run nbdkit: %s", strerror(errno));
        _exit(TOOL_EXIT_ERROR);
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            tool_error("waitpid: %s", strerror(errno));
            return -1;
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        return -1;
    }
    for (i = 0; pidfile && i < SERVE_PIDFILE_WAIT_MS / 10; i++) {
        if (pidfile_written(pidfile)) {
            return 0;
        }
        usleep(10 * 1000);
    }
    if (pidfile) {
        tool_error("nbdkit started but did not write its pid file %s", pidfile);
        return -1;
    }
    return 0;
}

/* Parse a decimal integer in [min, max]. */
static int parse_uint(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        return -EINVAL;
    }
    *out = v;
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    enum { OPT_NO_BACKING = 256, OPT_CACHE_SIZE, OPT_THREADS, OPT_BACKGROUND, OPT_PIDFILE };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "socket", required_argument, NULL, 'k' },
        { "port", required_argument, NULL, 'p' },
        { "readonly", no_argument, NULL, 'r' },
        { "read-only", no_argument, NULL, 'r' },
        { "shared", required_argument, NULL, 'e' },
        { "no-backing", no_argument, NULL, OPT_NO_BACKING },
        { "cache-size", required_argument, NULL, OPT_CACHE_SIZE },
        { "threads", required_argument, NULL, OPT_THREADS },
        { "foreground", no_argument, NULL, 'f' },
        { "background", no_argument, NULL, OPT_BACKGROUND },
        { "pidfile", required_argument, NULL, OPT_PIDFILE },
        TOOL_TRUST_LONGOPTS,
        { NULL, 0, NULL, 0 },
    };
    const char *socket_arg = NULL, *pidfile = NULL, *image;
    long port = -1, shared = 0, threads = SERVE_DEFAULT_THREADS;
    int readonly = 0, no_backing = 0, background = 0, c, n = 0;
    uint64_t cache_size = 0;
    int have_cache_size = 0;
    char *plugin = NULL, *sock = NULL, *file_arg = NULL, *allow_arg = NULL;
    struct tool_trust trust = { 0 };
    char port_s[16], threads_s[24], limit_s[32], cache_s[48];
    char *args[SERVE_MAX_ARGS];

    optind = 0;
    while ((c = getopt_long(argc, argv, "hk:p:re:f", longopts, NULL)) != -1) {
        if (tool_trust_option(&trust, c, optarg)) {
            continue;
        }
        switch (c) {
        case 'h':
            serve_usage(stdout);
            return TOOL_EXIT_OK;
        case 'k':
            socket_arg = optarg;
            break;
        case 'p':
            if (parse_uint(optarg, 1, 65535, &port) < 0) {
                return tool_usage_error("serve", "invalid port '%s' (1 to 65535)", optarg);
            }
            break;
        case 'r':
            readonly = 1;
            break;
        case 'e':
            if (parse_uint(optarg, 1, INT_MAX, &shared) < 0) {
                return tool_usage_error("serve", "invalid number of connections '%s'", optarg);
            }
            break;
        case OPT_NO_BACKING:
            no_backing = 1;
            break;
        case OPT_CACHE_SIZE:
            if (tool_parse_size(optarg, "--cache-size", &cache_size) < 0) {
                return TOOL_EXIT_ERROR;
            }
            have_cache_size = 1;
            break;
        case OPT_THREADS:
            if (parse_uint(optarg, 1, 1024, &threads) < 0) {
                return tool_usage_error("serve", "invalid number of threads '%s' (1 to 1024)",
                                        optarg);
            }
            break;
        case 'f':
            background = 0;
            break;
        case OPT_BACKGROUND:
            background = 1;
            break;
        case OPT_PIDFILE:
            pidfile = optarg;
            break;
        default:
            return tool_usage_error("serve", "invalid option");
        }
    }
    if (optind != argc - 1) {
        return tool_usage_error("serve", "expecting one image file name");
    }
    image = argv[optind];
    if (socket_arg && port >= 0) {
        return tool_usage_error("serve", "--socket and --port exclude each other");
    }
    if (!socket_arg && port < 0) {
        port = SERVE_DEFAULT_PORT;
    }
    if (!in_path(SERVE_NBDKIT)) {
        tool_error("nbdkit is not installed (apt-get install nbdkit)");
        return TOOL_EXIT_ERROR;
    }
    plugin = find_plugin();
    if (!plugin) {
        return TOOL_EXIT_ERROR;
    }
    /* Open the image once here, read-only, so that an image the plugin cannot open is
     * reported before any URI is printed. The plugin opens it again for real. */
    {
        struct qcow2_image *img;
        unsigned flags = no_backing ? TOOL_OPEN_NO_BACKING : 0;

        if (tool_open_trust(image, QCOW2_FORMAT_PROBE, flags, &trust, &img) < 0) {
            goto fail;
        }
        qcow2_close(img);
    }
    if (socket_arg) {
        sock = absolute_path(socket_arg);
        if (!sock) {
            tool_error("%s: %s", socket_arg, strerror(errno));
            goto fail;
        }
        if (strlen(sock) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            tool_error("socket path too long (at most %zu bytes): %s",
                       sizeof(((struct sockaddr_un *)0)->sun_path) - 1, sock);
            goto fail;
        }
        if (clear_stale_socket(sock) < 0) {
            goto fail;
        }
    }
    file_arg = malloc(strlen(image) + sizeof("file="));
    if (!file_arg) {
        tool_error("out of memory");
        goto fail;
    }
    sprintf(file_arg, "file=%s", image);
    if (trust.allow_dir && asprintf(&allow_arg, "allow-dir=%s", trust.allow_dir) < 0) {
        allow_arg = NULL;
        tool_error("out of memory");
        goto fail;
    }

    /* nbdkit [-f] [-r] [-U SOCK | -i ADDR -p PORT] --threads N [-P FILE] [--filter=limit]
     *        PLUGIN file=IMAGE [readonly=1] [backing=0] [cache-size=BYTES] [limit=N] */
    args[n++] = SERVE_NBDKIT;
    if (!background) {
        args[n++] = "-f";
    }
    if (readonly) {
        args[n++] = "-r";
    }
    if (sock) {
        args[n++] = "-U";
        args[n++] = sock;
    } else {
        snprintf(port_s, sizeof(port_s), "%ld", port);
        args[n++] = "-i";
        args[n++] = SERVE_ADDRESS;
        args[n++] = "-p";
        args[n++] = port_s;
    }
    snprintf(threads_s, sizeof(threads_s), "--threads=%ld", threads);
    args[n++] = threads_s;
    if (pidfile) {
        args[n++] = "-P";
        args[n++] = (char *)pidfile;
    }
    if (shared > 0) {
        args[n++] = "--filter=limit";
    }
    args[n++] = plugin;
    args[n++] = file_arg;
    if (readonly) {
        args[n++] = "readonly=1";
    }
    if (no_backing) {
        args[n++] = "backing=0";
    }
    if (trust.untrusted) {
        args[n++] = "untrusted=1";
    }
    if (allow_arg) {
        args[n++] = allow_arg;
    }
    if (have_cache_size) {
        snprintf(cache_s, sizeof(cache_s), "cache-size=%" PRIu64, cache_size);
        args[n++] = cache_s;
    }
    if (shared > 0) {
        snprintf(limit_s, sizeof(limit_s), "limit=%ld", shared);
        args[n++] = limit_s;
    }
    args[n] = NULL;

    if (background) {
        /* Returns once nbdkit listens (it forks into the background after binding) and its
         * pid file, written by the daemon just after that, is there. */
        if (pidfile && unlink(pidfile) < 0 && errno != ENOENT) {
            tool_error("%s: %s", pidfile, strerror(errno));
            goto fail;
        }
        if (run_nbdkit_background(args, pidfile) < 0) {
            goto fail;
        }
        print_uri(sock, port);
        free(plugin);
        free(sock);
        free(file_arg);
        free(allow_arg);
        return TOOL_EXIT_OK;
    }
    print_uri(sock, port);
    execvp(SERVE_NBDKIT, args);
    tool_error("could not run nbdkit: %s", strerror(errno));
fail:
    free(plugin);
    free(sock);
    free(file_arg);
    free(allow_arg);
    return TOOL_EXIT_ERROR;
}
