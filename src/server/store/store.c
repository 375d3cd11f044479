/* store.c - the parts of store.h that every implementation shares. */
#include "server/store/store.h"

#include <stdlib.h>
#include <string.h>

static const char *const status_names[TASK_STATUS_COUNT] = {
    "pending", "processing", "completed", "failed", "cancelled", "expired",
};

const char *task_status_name(enum task_status s)
{
    return (unsigned)s < TASK_STATUS_COUNT ? status_names[s] : "unknown";
}

int task_status_from_name(const char *name)
{
    for (int i = 0; i < TASK_STATUS_COUNT; i++)
        if (!strcmp(name, status_names[i]))
            return i;
    return -1;
}

int task_status_final(enum task_status s)
{
    return s == TASK_COMPLETED || s == TASK_FAILED || s == TASK_CANCELLED || s == TASK_EXPIRED;
}

void task_clear(struct task *t)
{
    free(t->prompt);
    free(t->params);
    free(t->error_message);
    free(t->model);
    memset(t, 0, sizeof *t);
}
