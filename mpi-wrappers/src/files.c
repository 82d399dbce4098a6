/* MPI-IO files across checkpoints.
 *
 * MPI_File is a pointer in MPICH's ABI (ROMIO's ADIOI_FileD *). The application gets a
 * virtual value instead: MANA_FILE_TAG | index, a non-canonical address that faults if
 * it ever reached the lower half untranslated. Its Fortran handle is index + 1 (0 is
 * MPI_FILE_NULL), so MPI_File_c2f/f2c answer the same values before and after a restart.
 *
 * Each open file has a record (struct mana_file): what MPI_File_open was given (the path
 * made absolute, the access mode, the hints), MANA's own communicator over the file's
 * group (made with MPI_Comm_create at open, so it survives the application freeing its
 * communicator, is re-created by a restart like any other, and carries the count of the
 * file's collective calls for the checkpoint agreement), the view (displacement, etype
 * and filetype held by a reference, data representation), the error handler, and at a
 * checkpoint the file pointers, size and atomicity.
 *
 * Checkpoint (mana_files_snapshot, gate closed, drain done: no I/O request is pending):
 * every file is synced (collective over its group; files in the order of their
 * communicators' gids, which every rank shares) and its pointers recorded.
 * Restart (mana_files_reopen): every file is opened again with MPI_MODE_CREATE and
 * MPI_MODE_EXCL stripped (a file deleted since must not be silently re-created) after a
 * check that it still exists and is not shorter than it was, then its error handler,
 * view, atomicity and pointers are put back. File contents are not part of the image.
 *
 * Split collectives (*_begin and *_end): ROMIO does the whole operation in *_begin; the
 * wrapper of *_begin also calls the lower *_end at once and keeps its status for the
 * application's *_end, so no split operation is ever open in the lower half at a
 * checkpoint. */
#include "mana_wrap.h"
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MANA_FILE_TAG 0xFA11000000000000ull
#define FILE_CHUNK_BITS 8
#define FILE_CHUNKS 256 /* at most 65536 files open at once */

struct mana_file {
    MPI_File real;
    int idx;
    MPI_Comm comm; /* MANA's own (virtual) communicator over the file's group */
    char *path;    /* as given, made absolute */
    int amode;
    char *hints; /* "key\0value\0"… from open, set_info and set_view */
    size_t hints_len;
    int has_view;
    MPI_Offset disp;
    MPI_Datatype etype, filetype; /* a reference held on each derived one */
    char datarep[MPI_MAX_DATAREP_STRING + 1];
    MPI_Errhandler eh; /* set with MPI_File_set_errhandler (reference held), or 0 */
    unsigned char used_shared;  /* the shared file pointer was used */
    unsigned char split_pending; /* a split collective's *_end is due */
    int split_rc;
    MPI_Status split_status;
    /* At the checkpoint. */
    MPI_Offset pos, pos_shared, size;
    int atomic;
};

static struct mana_file **file_dir[FILE_CHUNKS];
static unsigned file_next; /* where the search for a free index starts */
static pthread_mutex_t files_lock = PTHREAD_MUTEX_INITIALIZER;
/* The handler set on MPI_FILE_NULL (the default of files opened later), or 0. */
static MPI_Errhandler default_eh;

/* Every lower-half address of a file that is not open: ROMIO sees a zero "cookie" in it
 * and reports MPI_ERR_FILE, as it would for a closed file. */
static char invalid_file[4096] __attribute__((aligned(64)));

static struct mana_file *file_at(unsigned idx)
{
    if (idx >= FILE_CHUNKS << FILE_CHUNK_BITS)
        return NULL;
    struct mana_file **chunk = __atomic_load_n(&file_dir[idx >> FILE_CHUNK_BITS], __ATOMIC_ACQUIRE);
    return chunk ? __atomic_load_n(&chunk[idx & ((1u << FILE_CHUNK_BITS) - 1)], __ATOMIC_ACQUIRE) : NULL;
}

static struct mana_file *file_of(MPI_File v)
{
    uintptr_t x = (uintptr_t)v;
    if ((x & ~(uintptr_t)0xFFFFFFFF) != MANA_FILE_TAG)
        return NULL;
    return file_at((unsigned)(x & 0xFFFFFFFF));
}

static MPI_File file_handle(const struct mana_file *f)
{
    return (MPI_File)(uintptr_t)(MANA_FILE_TAG | (unsigned)f->idx);
}

MPI_File mana_file_real(MPI_File v)
{
    if (v == MPI_FILE_NULL)
        return v;
    struct mana_file *f = file_of(v);
    if (f)
        return f->real;
    return (MPI_File)(void *)invalid_file;
}

MPI_Comm mana_file_comm(MPI_File v)
{
    struct mana_file *f = file_of(v);
    return f ? f->comm : MPI_COMM_NULL;
}

/* The application's handle of a real file (error handler callbacks), or MPI_FILE_NULL. */
MPI_File mana_file_virtual(MPI_File real)
{
    if (real == MPI_FILE_NULL)
        return real;
    for (unsigned c = 0; c < FILE_CHUNKS; c++) {
        struct mana_file **chunk = __atomic_load_n(&file_dir[c], __ATOMIC_ACQUIRE);
        for (unsigned i = 0; chunk && i < (1u << FILE_CHUNK_BITS); i++) {
            struct mana_file *f = __atomic_load_n(&chunk[i], __ATOMIC_ACQUIRE);
            if (f && f->real == real)
                return file_handle(f);
        }
    }
    return MPI_FILE_NULL;
}

/* A free index for `f` (-1 if 65536 files are open). */
static int file_insert(struct mana_file *f)
{
    pthread_mutex_lock(&files_lock);
    const unsigned cap = FILE_CHUNKS << FILE_CHUNK_BITS;
    int found = -1;
    for (unsigned n = 0; n < cap && found < 0; n++) {
        unsigned idx = (file_next + n) % cap;
        struct mana_file ***chunk = &file_dir[idx >> FILE_CHUNK_BITS];
        if (!*chunk) {
            struct mana_file **c = calloc(1u << FILE_CHUNK_BITS, sizeof *c);
            if (!c)
                break;
            __atomic_store_n(chunk, c, __ATOMIC_RELEASE);
        }
        if (!(*chunk)[idx & ((1u << FILE_CHUNK_BITS) - 1)]) {
            f->idx = (int)idx;
            __atomic_store_n(&(*chunk)[idx & ((1u << FILE_CHUNK_BITS) - 1)], f, __ATOMIC_RELEASE);
            file_next = idx + 1;
            found = (int)idx;
        }
    }
    pthread_mutex_unlock(&files_lock);
    return found;
}

static void file_remove(struct mana_file *f)
{
    pthread_mutex_lock(&files_lock);
    __atomic_store_n(&file_dir[f->idx >> FILE_CHUNK_BITS][f->idx & ((1u << FILE_CHUNK_BITS) - 1)], NULL,
                     __ATOMIC_RELEASE);
    pthread_mutex_unlock(&files_lock);
}

/* Every open file, sorted by its communicator's gid (the order every rank shares). */
struct file_list {
    struct mana_file **at;
    int n;
};

static int by_gid(const void *a, const void *b)
{
    const struct mana_comm_meta *x = mana_comm_meta((*(struct mana_file *const *)a)->comm);
    const struct mana_comm_meta *y = mana_comm_meta((*(struct mana_file *const *)b)->comm);
    unsigned long long gx = x ? x->gid : 0, gy = y ? y->gid : 0;
    return (gx > gy) - (gx < gy);
}

static struct file_list files_in_order(void)
{
    struct file_list l = {NULL, 0};
    int cap = 0;
    for (unsigned c = 0; c < FILE_CHUNKS; c++) {
        struct mana_file **chunk = file_dir[c];
        for (unsigned i = 0; chunk && i < (1u << FILE_CHUNK_BITS); i++) {
            if (!chunk[i])
                continue;
            if (l.n == cap) {
                cap = cap ? 2 * cap : 16;
                struct mana_file **p = realloc(l.at, (size_t)cap * sizeof *p);
                if (!p) {
                    fprintf(stderr, "mana: out of memory listing the open MPI files\n");
                    abort();
                }
                l.at = p;
            }
            l.at[l.n++] = chunk[i];
        }
    }
    if (l.n > 1)
        qsort(l.at, (size_t)l.n, sizeof *l.at, by_gid);
    return l;
}

/* ---- Hints: a file's info keys and values, kept as strings ---- */

static void hint_set(struct mana_file *f, const char *key, const char *value)
{
    /* Drop an earlier value of the key, then append. */
    size_t klen = strlen(key) + 1, vlen = strlen(value) + 1;
    for (size_t at = 0; at < f->hints_len;) {
        size_t k = strlen(f->hints + at) + 1, v = strlen(f->hints + at + k) + 1;
        if (!strcmp(f->hints + at, key)) {
            memmove(f->hints + at, f->hints + at + k + v, f->hints_len - at - k - v);
            f->hints_len -= k + v;
            break;
        }
        at += k + v;
    }
    char *p = realloc(f->hints, f->hints_len + klen + vlen);
    if (!p)
        return;
    memcpy(p + f->hints_len, key, klen);
    memcpy(p + f->hints_len + klen, value, vlen);
    f->hints = p;
    f->hints_len += klen + vlen;
}

/* Copies the keys and values of real info `info` into `f`'s hints (holding the gate). */
static void hints_add(struct mana_file *f, MPI_Info info)
{
    if (info == MPI_INFO_NULL)
        return;
    int n = 0, r;
    {
        MANA_CALL_LOWER_INTO(r, 4600, "PMPI_Info_get_nkeys", int, (MPI_Info, int *), (info, &n));
    }
    for (int i = 0; r == MPI_SUCCESS && i < n; i++) {
        char key[MPI_MAX_INFO_KEY + 1];
        int rk, rv, len = 0, flag = 0;
        {
            MANA_CALL_LOWER_INTO(rk, 4601, "PMPI_Info_get_nthkey", int, (MPI_Info, int, char *), (info, i, key));
        }
        if (rk != MPI_SUCCESS)
            continue;
        {
            MANA_CALL_LOWER_INTO(rv, 4602, "PMPI_Info_get_valuelen", int, (MPI_Info, const char *, int *, int *),
                                 (info, key, &len, &flag));
        }
        if (rv != MPI_SUCCESS || !flag || len < 0 || len > MPI_MAX_INFO_VAL)
            continue;
        char value[MPI_MAX_INFO_VAL + 1];
        {
            MANA_CALL_LOWER_INTO(rv, 4603, "PMPI_Info_get", int, (MPI_Info, const char *, int, char *, int *),
                                 (info, key, MPI_MAX_INFO_VAL, value, &flag));
        }
        if (rv == MPI_SUCCESS && flag) {
            value[MPI_MAX_INFO_VAL] = 0;
            hint_set(f, key, value);
        }
    }
}

/* A real info holding `f`'s hints (MPI_INFO_NULL if none), for a restart's open. */
static MPI_Info hints_info(const struct mana_file *f)
{
    if (!f->hints_len)
        return MPI_INFO_NULL;
    MPI_Info info = MPI_INFO_NULL;
    int r;
    {
        MANA_CALL_LOWER_INTO(r, 4604, "PMPI_Info_create", int, (MPI_Info *), (&info));
    }
    if (r != MPI_SUCCESS)
        return MPI_INFO_NULL;
    for (size_t at = 0; at < f->hints_len;) {
        const char *key = f->hints + at, *value = key + strlen(key) + 1;
        {
            MANA_CALL_LOWER_INTO(r, 4605, "PMPI_Info_set", int, (MPI_Info, const char *, const char *),
                                 (info, key, value));
        }
        at += strlen(key) + 1 + strlen(value) + 1;
    }
    return info;
}

static void info_free(MPI_Info *info)
{
    if (*info == MPI_INFO_NULL)
        return;
    int r;
    {
        MANA_CALL_LOWER_INTO(r, 4606, "PMPI_Info_free", int, (MPI_Info *), (info));
    }
    (void)r;
}

/* ---- References the record holds on the application's objects ---- */

static void hold(int v)
{
    if (mana_h_is_object(v) && mana_h_is_virtual(v) && !mana_h_is_virtual(mana_h_real(v)))
        (void)mana_h_hold(v);
}

static void drop(int *v)
{
    if (*v && mana_h_is_object(*v) && mana_h_is_virtual(*v) && !mana_h_is_virtual(mana_h_real(*v)))
        mana_h_unref(*v);
    *v = 0;
}

/* The absolute form of a path given to MPI_File_open (a ROMIO prefix such as "ufs:" is
 * kept in front). */
static char *absolute(const char *path)
{
    const char *colon = strchr(path, ':'), *plain = path;
    size_t prefix = 0;
    if (colon && colon - path > 1 && !memchr(path, '/', (size_t)(colon - path))) {
        prefix = (size_t)(colon - path) + 1;
        plain = colon + 1;
    }
    char cwd[PATH_MAX];
    if (plain[0] == '/' || !getcwd(cwd, sizeof cwd))
        return strdup(path);
    size_t n = prefix + strlen(cwd) + 1 + strlen(plain) + 1;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%.*s%s/%s", (int)prefix, path, cwd, plain);
    return out;
}

/* The file-system path of a record's path (without a ROMIO prefix). */
static const char *plain_path(const char *path)
{
    const char *colon = strchr(path, ':');
    if (colon && colon - path > 1 && !memchr(path, '/', (size_t)(colon - path)))
        return colon + 1;
    return path;
}

/* ---- Open and close ---- */

/* MANA's communicator over `comm`'s group (through the exported wrappers: counted,
 * virtual, re-created by a restart). Attributes and error handler are not copied. */
static int file_comm(MPI_Comm comm, MPI_Comm *out)
{
    MPI_Group g = MPI_GROUP_NULL;
    int r = PMPI_Comm_group(comm, &g);
    if (r != MPI_SUCCESS)
        return r;
    r = PMPI_Comm_create(comm, g, out);
    PMPI_Group_free(&g);
    return r;
}

static void record_free(struct mana_file *f)
{
    drop(&f->etype);
    drop(&f->filetype);
    drop(&f->eh);
    free(f->path);
    free(f->hints);
    free(f);
}

__attribute__((used)) static int mana_w_MPI_File_open(MPI_Comm comm, const char *filename, int amode, MPI_Info info,
                                                      MPI_File *fh)
{
    MPI_Comm own = MPI_COMM_NULL;
    int r = file_comm(comm, &own);
    if (r != MPI_SUCCESS) { /* an invalid or inter-communicator: MPI's own answer */
        mana_gate_enter();
        MPI_Comm c = mana_h_real(comm);
        MPI_Info i = mana_h_real(info);
        {
            MANA_CALL_LOWER_INTO(r, 4607, "PMPI_File_open", int, (MPI_Comm, const char *, int, MPI_Info, MPI_File *),
                                 (c, filename, amode, i, fh));
        }
        mana_gate_leave();
        return r;
    }
    struct mana_file *f = calloc(1, sizeof *f);
    const int counted = mana_coll_enter(own);
    mana_gate_enter();
    MPI_Comm c = mana_h_real(own);
    MPI_Info i = mana_h_real(info);
    MPI_File real = MPI_FILE_NULL;
    int made_nothing = 0;
    {
        MANA_CALL_LOWER_INTO(r, 4471, "PMPI_File_open", int, (MPI_Comm, const char *, int, MPI_Info, MPI_File *),
                             (c, filename, amode, i, &real));
    }
    if (r == MPI_SUCCESS && real == MPI_FILE_NULL)
        made_nothing = 1;
    else if (r == MPI_SUCCESS && f) {
        f->real = real;
        f->comm = own;
        f->path = absolute(filename ? filename : "");
        f->amode = amode;
        hints_add(f, i);
        if (default_eh) {
            f->eh = default_eh;
            hold(f->eh);
        }
    }
    mana_gate_leave();
    mana_coll_leave(counted);
    if (made_nothing) { /* a C++ binding's handler took the error: MPICH answers success */
        if (f)
            record_free(f);
        PMPI_Comm_free(&own);
        *fh = MPI_FILE_NULL;
        return MPI_SUCCESS;
    }
    if (r != MPI_SUCCESS || !f || file_insert(f) < 0) {
        if (r == MPI_SUCCESS) { /* no memory, or 65536 files open */
            fprintf(stderr, "mana: cannot keep a record of MPI file %s (out of memory, or too many open)\n",
                    filename ? filename : "");
            mana_gate_enter();
            int rc;
            {
                MANA_CALL_LOWER_INTO(rc, 4608, "PMPI_File_close", int, (MPI_File *), (&real));
            }
            (void)rc;
            mana_gate_leave();
            r = MPI_ERR_NO_MEM;
        }
        if (f)
            record_free(f);
        PMPI_Comm_free(&own);
        return r;
    }
    *fh = file_handle(f);
    return MPI_SUCCESS;
}
MANA_EXPORT(mana_w_MPI_File_open, MPI_File_open)
MANA_EXPORT(mana_w_MPI_File_open, PMPI_File_open)

__attribute__((used)) static int mana_w_MPI_File_close(MPI_File *fh)
{
    struct mana_file *f = fh ? file_of(*fh) : NULL;
    int r;
    if (!f) { /* not an open file: MPI's own answer */
        MPI_File real = fh ? mana_file_real(*fh) : MPI_FILE_NULL;
        MANA_FORWARD_INTO(r, 4472, "PMPI_File_close", int, (MPI_File *), (fh ? &real : NULL));
        return r;
    }
    const int counted = mana_coll_enter(f->comm);
    mana_gate_enter();
    MPI_File real = f->real;
    {
        MANA_CALL_LOWER_INTO(r, 4609, "PMPI_File_close", int, (MPI_File *), (&real));
    }
    mana_gate_leave();
    mana_coll_leave(counted);
    if (r != MPI_SUCCESS)
        return r;
    file_remove(f);
    PMPI_Comm_free(&f->comm);
    record_free(f);
    *fh = MPI_FILE_NULL;
    return MPI_SUCCESS;
}
MANA_EXPORT(mana_w_MPI_File_close, MPI_File_close)
MANA_EXPORT(mana_w_MPI_File_close, PMPI_File_close)

/* ---- Fortran handles ---- */

__attribute__((used)) static MPI_Fint mana_w_MPI_File_c2f(MPI_File file)
{
    struct mana_file *f = file_of(file);
    return f ? (MPI_Fint)f->idx + 1 : 0;
}
MANA_EXPORT(mana_w_MPI_File_c2f, MPI_File_c2f)
MANA_EXPORT(mana_w_MPI_File_c2f, PMPI_File_c2f)

__attribute__((used)) static MPI_File mana_w_MPI_File_f2c(MPI_Fint file)
{
    struct mana_file *f = file > 0 ? file_at((unsigned)file - 1) : NULL;
    return f ? file_handle(f) : MPI_FILE_NULL;
}
MANA_EXPORT(mana_w_MPI_File_f2c, MPI_File_f2c)
MANA_EXPORT(mana_w_MPI_File_f2c, PMPI_File_f2c)

/* The access mode the application opened the file with (a restart re-opens it without
 * MPI_MODE_CREATE and MPI_MODE_EXCL, which MPICH would report). */
__attribute__((used)) static int mana_w_MPI_File_get_amode(MPI_File fh, int *amode)
{
    struct mana_file *f = file_of(fh);
    if (f && amode) {
        *amode = f->amode;
        return MPI_SUCCESS;
    }
    MPI_File real = mana_file_real(fh);
    int r;
    MANA_FORWARD_INTO(r, 4630, "PMPI_File_get_amode", int, (MPI_File, int *), (real, amode));
    return r;
}
MANA_EXPORT(mana_w_MPI_File_get_amode, MPI_File_get_amode)
MANA_EXPORT(mana_w_MPI_File_get_amode, PMPI_File_get_amode)

/* ---- What the generated wrappers report (generated/wrappers.c) ---- */

void mana_file_view_set(MPI_File v, MPI_Offset disp, MPI_Datatype etype, MPI_Datatype filetype, const char *datarep,
                        MPI_Info real_info)
{
    struct mana_file *f = file_of(v);
    if (!f)
        return;
    hold(etype);
    hold(filetype);
    drop(&f->etype);
    drop(&f->filetype);
    f->etype = etype;
    f->filetype = filetype;
    f->disp = disp;
    f->has_view = 1;
    snprintf(f->datarep, sizeof f->datarep, "%s", datarep ? datarep : "native");
    hints_add(f, real_info);
}

void mana_file_info_set(MPI_File v, MPI_Info real_info)
{
    struct mana_file *f = file_of(v);
    if (f)
        hints_add(f, real_info);
}

void mana_file_errhandler_set(MPI_File v, MPI_Errhandler eh)
{
    MPI_Errhandler *slot;
    if (v == MPI_FILE_NULL) {
        slot = &default_eh;
    } else {
        struct mana_file *f = file_of(v);
        if (!f)
            return;
        slot = &f->eh;
    }
    hold(eh);
    drop(slot);
    *slot = eh;
}

void mana_file_used_shared(MPI_File v)
{
    struct mana_file *f = file_of(v);
    if (f)
        f->used_shared = 1;
}

/* A nonblocking I/O request: the drain completes it (a collective one counted on the
 * file's communicator). */
void mana_file_request(MPI_Request req, MPI_File v, int collective)
{
    struct mana_file *f = file_of(v);
    struct mana_req_meta *m = mana_req_meta(req);
    if (!m)
        return;
    m->io = 1;
    m->posted = mana_next_posted(); /* the drain completes collective ones in this order */
    if (collective && f) {
        mana_req_mark_coll(req, f->comm, 0);
        return;
    }
    m->kind = MANA_REQ_IO;
    m->active = 1;
}

/* After a split collective's *_begin (`which`: read_all, read_at_all, read_ordered,
 * write_all, write_at_all, write_ordered): its *_end now, the status kept for the
 * application's. */
static const struct {
    unsigned id;
    const char *name;
} split_ends[] = {{4610, "PMPI_File_read_all_end"},  {4611, "PMPI_File_read_at_all_end"},
                  {4612, "PMPI_File_read_ordered_end"}, {4613, "PMPI_File_write_all_end"},
                  {4614, "PMPI_File_write_at_all_end"}, {4615, "PMPI_File_write_ordered_end"}};

int mana_file_split_begun(MPI_File v, MPI_File real, const void *buf, int which)
{
    struct mana_file *f = file_of(v);
    if (!f)
        return MPI_SUCCESS;
    unsigned long fs = mana_thread_lower_fs();
    int (*end)(MPI_File, const void *, MPI_Status *) = (int (*)(MPI_File, const void *, MPI_Status *))mana_lower_fn(
        split_ends[which].id, split_ends[which].name, fs);
    MPI_Status st;
    memset(&st, 0, sizeof st);
    unsigned long up = mana_enter_lower(fs);
    f->split_rc = end(real, buf, &st);
    mana_leave_lower(up);
    f->split_status = st;
    f->split_pending = 1;
    return MPI_SUCCESS;
}

static int split_end(MPI_File fh, void *buf, MPI_Status *status, int which)
{
    struct mana_file *f = file_of(fh);
    const int counted = f ? mana_coll_enter(f->comm) : 0;
    int r;
    if (f && f->split_pending) {
        f->split_pending = 0;
        if (status && !mana_status_ignored(status))
            mana_status_copy(status, &f->split_status);
        r = f->split_rc;
    } else { /* no *_begin: MPI's own error */
        mana_gate_enter();
        MPI_File real = mana_file_real(fh);
        MPI_Status st, *sp = status && !mana_status_ignored(status) ? &st : status;
        unsigned long fs = mana_thread_lower_fs();
        int (*end)(MPI_File, void *, MPI_Status *) =
            (int (*)(MPI_File, void *, MPI_Status *))mana_lower_fn(split_ends[which].id, split_ends[which].name, fs);
        unsigned long up = mana_enter_lower(fs);
        r = end(real, buf, sp);
        mana_leave_lower(up);
        if (sp == &st)
            mana_status_copy(status, &st);
        mana_gate_leave();
    }
    mana_coll_leave(counted);
    return r;
}

#define SPLIT_END(NAME, WHICH, CONST)                                                          \
    __attribute__((used)) static int mana_w_##NAME(MPI_File fh, CONST void *buf, MPI_Status *status) \
    {                                                                                          \
        return split_end(fh, (void *)buf, status, WHICH);                                      \
    }                                                                                          \
    MANA_EXPORT(mana_w_##NAME, NAME)                                                           \
    MANA_EXPORT(mana_w_##NAME, P##NAME)
SPLIT_END(MPI_File_read_all_end, 0, )
SPLIT_END(MPI_File_read_at_all_end, 1, )
SPLIT_END(MPI_File_read_ordered_end, 2, )
SPLIT_END(MPI_File_write_all_end, 3, const)
SPLIT_END(MPI_File_write_at_all_end, 4, const)
SPLIT_END(MPI_File_write_ordered_end, 5, const)

/* ---- Checkpoint ---- */

typedef int (*file_off_fn)(MPI_File, MPI_Offset *);

int mana_files_snapshot(char *why, int len)
{
    struct file_list l = files_in_order();
    unsigned long fs = mana_thread_lower_fs();
    int bad = 0;
    for (int i = 0; i < l.n; i++) {
        struct mana_file *f = l.at[i];
        int r = MPI_SUCCESS, rs = MPI_SUCCESS;
        if (!(f->amode & MPI_MODE_RDONLY)) {
            int (*sync)(MPI_File) = (int (*)(MPI_File))lower_get(LOWER_FN(4616, "PMPI_File_sync"), fs);
            unsigned long up = mana_enter_lower(fs);
            rs = sync(f->real);
            mana_leave_lower(up);
        }
        file_off_fn pos = (file_off_fn)lower_get(LOWER_FN(4617, "PMPI_File_get_position"), fs);
        file_off_fn pos_shared = (file_off_fn)lower_get(LOWER_FN(4618, "PMPI_File_get_position_shared"), fs);
        file_off_fn size = (file_off_fn)lower_get(LOWER_FN(4619, "PMPI_File_get_size"), fs);
        int (*atomicity)(MPI_File, int *) =
            (int (*)(MPI_File, int *))lower_get(LOWER_FN(4620, "PMPI_File_get_atomicity"), fs);
        unsigned long up = mana_enter_lower(fs);
        f->pos = f->pos_shared = 0;
        if (!(f->amode & MPI_MODE_SEQUENTIAL))
            r = pos(f->real, &f->pos);
        if (r == MPI_SUCCESS && f->used_shared)
            r = pos_shared(f->real, &f->pos_shared);
        if (r == MPI_SUCCESS)
            r = size(f->real, &f->size);
        if (r == MPI_SUCCESS)
            r = atomicity(f->real, &f->atomic);
        mana_leave_lower(up);
        if ((r != MPI_SUCCESS || rs != MPI_SUCCESS) && !bad) {
            bad = 1;
            snprintf(why, (size_t)len, "recording the state of the MPI file %s failed (error %d)", f->path,
                     r != MPI_SUCCESS ? r : rs);
        }
    }
    free(l.at);
    return bad ? -1 : 0;
}

/* ---- Restart ---- */

typedef int (*file_seek_fn)(MPI_File, MPI_Offset, int);

/* Whether every open file is still there, and as long as it was: 0, or -1 with one line. */
static int check_file(const struct mana_file *f, char *err, int errlen)
{
    struct stat st;
    if (stat(plain_path(f->path), &st) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            snprintf(err, (size_t)errlen,
                     "the MPI file %s open at the checkpoint has vanished (MPI-IO files are not part of the image)",
                     f->path);
        else
            snprintf(err, (size_t)errlen, "the MPI file %s open at the checkpoint cannot be reached: %s", f->path,
                     strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode) && (MPI_Offset)st.st_size < f->size) {
        snprintf(err, (size_t)errlen,
                 "the MPI file %s is shorter (%lld bytes) than at the checkpoint (%lld bytes): it was changed since",
                 f->path, (long long)st.st_size, (long long)f->size);
        return -1;
    }
    return 0;
}

static int reopen(struct mana_file *f, char *err, int errlen)
{
    unsigned long fs = mana_thread_lower_fs();
    MPI_Info info = hints_info(f);
    MPI_File real = MPI_FILE_NULL;
    int amode = f->amode & ~(MPI_MODE_CREATE | MPI_MODE_EXCL);
    int (*open)(MPI_Comm, const char *, int, MPI_Info, MPI_File *) =
        (int (*)(MPI_Comm, const char *, int, MPI_Info, MPI_File *))lower_get(LOWER_FN(4621, "PMPI_File_open"), fs);
    unsigned long up = mana_enter_lower(fs);
    int r = open(mana_h_real(f->comm), f->path, amode, info, &real);
    mana_leave_lower(up);
    info_free(&info);
    if (r != MPI_SUCCESS) {
        snprintf(err, (size_t)errlen, "opening the MPI file %s again failed (error %d)", f->path, r);
        return -1;
    }
    f->real = real;
    const char *step = NULL;
    if (f->eh) {
        int (*set_eh)(MPI_File, MPI_Errhandler) =
            (int (*)(MPI_File, MPI_Errhandler))lower_get(LOWER_FN(4622, "PMPI_File_set_errhandler"), fs);
        up = mana_enter_lower(fs);
        r = set_eh(real, mana_h_real(f->eh));
        mana_leave_lower(up);
        step = "its error handler";
    }
    if (r == MPI_SUCCESS && f->has_view) {
        int (*set_view)(MPI_File, MPI_Offset, MPI_Datatype, MPI_Datatype, const char *, MPI_Info) =
            (int (*)(MPI_File, MPI_Offset, MPI_Datatype, MPI_Datatype, const char *, MPI_Info))lower_get(
                LOWER_FN(4623, "PMPI_File_set_view"), fs);
        up = mana_enter_lower(fs);
        r = set_view(real, f->disp, mana_h_real(f->etype), mana_h_real(f->filetype), f->datarep, MPI_INFO_NULL);
        mana_leave_lower(up);
        step = "its view";
    }
    if (r == MPI_SUCCESS && f->atomic) {
        int (*set_atomicity)(MPI_File, int) =
            (int (*)(MPI_File, int))lower_get(LOWER_FN(4624, "PMPI_File_set_atomicity"), fs);
        up = mana_enter_lower(fs);
        r = set_atomicity(real, 1);
        mana_leave_lower(up);
        step = "its atomicity";
    }
    if (r == MPI_SUCCESS && !(f->amode & MPI_MODE_SEQUENTIAL) && f->pos) {
        file_seek_fn seek = (file_seek_fn)lower_get(LOWER_FN(4625, "PMPI_File_seek"), fs);
        up = mana_enter_lower(fs);
        r = seek(real, f->pos, MPI_SEEK_SET);
        mana_leave_lower(up);
        step = "its individual file pointer";
    }
    if (r == MPI_SUCCESS && f->used_shared) {
        file_seek_fn seek_shared = (file_seek_fn)lower_get(LOWER_FN(4626, "PMPI_File_seek_shared"), fs);
        up = mana_enter_lower(fs);
        r = seek_shared(real, f->pos_shared, MPI_SEEK_SET);
        mana_leave_lower(up);
        step = "its shared file pointer";
    }
    if (r != MPI_SUCCESS) {
        snprintf(err, (size_t)errlen, "setting %s on the re-opened MPI file %s failed (error %d)", step, f->path, r);
        return -1;
    }
    return 0;
}

int mana_files_reopen(char *err, int errlen)
{
    struct file_list l = files_in_order();
    int bad = 0;
    for (int i = 0; i < l.n && !bad; i++)
        bad = check_file(l.at[i], err, errlen) != 0;
    for (int i = 0; i < l.n && !bad; i++)
        bad = reopen(l.at[i], err, errlen) != 0;
    free(l.at);
    if (!bad && default_eh) {
        int r;
        {
            MANA_CALL_LOWER_INTO(r, 4627, "PMPI_File_set_errhandler", int, (MPI_File, MPI_Errhandler),
                                 (MPI_FILE_NULL, mana_h_real(default_eh)));
        }
        if (r != MPI_SUCCESS) {
            snprintf(err, (size_t)errlen, "setting the default error handler of MPI files again failed (error %d)",
                     r);
            bad = 1;
        }
    }
    return bad ? -1 : 0;
}
