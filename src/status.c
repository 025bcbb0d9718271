/*
 * status.c -- status codes, their names and messages, the thread's last
 * error, and the library version.
 */
#include "internal.h"

static _Thread_local int last_error;
static _Thread_local const char *last_msg; /* static storage, or NULL */

const char *cf_version(void)
{
    return CF_VERSION_STRING;
}

const char *cf_strerror(int status)
{
    switch (status) {
#define CF_STATUS_MSG_(name, value, msg) \
    case value:                          \
        return msg;
        CF_STATUS_MAP(CF_STATUS_MSG_)
#undef CF_STATUS_MSG_
    }
    return "unknown status code";
}

const char *cf_err_name(int status)
{
    switch (status) {
#define CF_STATUS_NAME_(name, value, msg) \
    case value:                           \
        return "CF_" #name;
        CF_STATUS_MAP(CF_STATUS_NAME_)
#undef CF_STATUS_NAME_
    }
    return "CF_UNKNOWN";
}

int cf_last_error(void)
{
    return last_error;
}

const char *cf_last_error_message(void)
{
    return last_msg != NULL ? last_msg : cf_strerror(last_error);
}

void *cf__fail_null(int status)
{
    last_error = status;
    last_msg = NULL;
    return NULL;
}

void *cf__fail_null_msg(int status, const char *msg)
{
    last_error = status;
    last_msg = msg;
    return NULL;
}
