/* error.c - error messages: the image's last error (per thread, as libnbd's) and messages
 * into a caller's buffer. The bottom layer: calls nothing of the library, so that every
 * layer above can report a failure in the same words. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

/* The last message set by this thread, and for which image: with several threads on one
 * image, each thread reads its own failure (as libnbd's errors are per thread). */
static __thread const struct qcow2_image *tls_err_img;
static __thread char tls_err[QCOW2_ERROR_MAX];

int format_error(char *err, size_t errlen, int ret, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return ret;
}

int set_error(struct qcow2_image *img, int ret, const char *fmt, ...)
{
    char msg[QCOW2_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&img->err_lock);
    /* A message that already names the file (passed up from a layer below) keeps its name. */
    if (strncmp(msg, img->filename, strlen(img->filename)) == 0)
        snprintf(img->err, sizeof(img->err), "%.*s", QCOW2_ERROR_MAX - 1, msg);
    else
        snprintf(img->err, sizeof(img->err), "%.200s: %.300s", img->filename, msg);
    memcpy(tls_err, img->err, sizeof(tls_err));
    tls_err_img = img;
    pthread_mutex_unlock(&img->err_lock);
    return ret;
}

const char *qcow2_error(const struct qcow2_image *img)
{
    if (!img)
        return "no image";
    return tls_err_img == img ? tls_err : img->err;
}
