/* MPI-IO files. MPI_File is a pointer in MPICH's ABI and is not virtual yet: a restart
 * cannot re-open a file and hand the application its old handle back. What this file
 * does meanwhile: MPI_File_open and MPI_File_close (both collective, counted by the
 * checkpoint agreement like the others) keep the set of open files, and a checkpoint
 * taken while one is open is marked so that its restart is refused with one line naming
 * the file (src/rebuild.c) — instead of restoring a pointer into a lower half that no
 * longer exists (a SIGSEGV inside the next MPI_File call). A checkpoint the job survives
 * is unaffected. */
#include "mana_wrap.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct open_file {
    MPI_File fh;
    char *path;
};
static struct open_file *open_files;
static unsigned n_open, cap_open;
static pthread_mutex_t files_lock = PTHREAD_MUTEX_INITIALIZER;

static void file_opened(MPI_File fh, const char *path)
{
    pthread_mutex_lock(&files_lock);
    if (n_open == cap_open) {
        unsigned cap = cap_open ? 2 * cap_open : 16;
        struct open_file *p = realloc(open_files, cap * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&files_lock);
            return;
        }
        open_files = p;
        cap_open = cap;
    }
    open_files[n_open].fh = fh;
    open_files[n_open].path = strdup(path ? path : "");
    n_open++;
    pthread_mutex_unlock(&files_lock);
}

static void file_closed(MPI_File fh)
{
    pthread_mutex_lock(&files_lock);
    for (unsigned i = 0; i < n_open; i++)
        if (open_files[i].fh == fh) {
            free(open_files[i].path);
            open_files[i] = open_files[--n_open];
            break;
        }
    pthread_mutex_unlock(&files_lock);
}

int mana_open_file_name(char *out, int len)
{
    pthread_mutex_lock(&files_lock);
    int any = n_open > 0;
    if (any)
        snprintf(out, (size_t)len, "%s", open_files[0].path);
    pthread_mutex_unlock(&files_lock);
    return any;
}

__attribute__((used)) static int mana_w_MPI_File_open(MPI_Comm comm, const char *filename, int amode, MPI_Info info,
                                                      MPI_File *fh)
{
    const int counted = mana_coll_enter(comm, 1);
    mana_gate_enter();
    MPI_Comm c = mana_h_real(comm);
    MPI_Info i = mana_h_real(info);
    int r;
    MANA_CALL_LOWER_INTO(r, 4471, "PMPI_File_open", int, (MPI_Comm, const char *, int, MPI_Info, MPI_File *),
                         (c, filename, amode, i, fh));
    if (r == MPI_SUCCESS)
        file_opened(*fh, filename);
    mana_gate_leave();
    mana_coll_leave(counted, 1);
    return r;
}
MANA_EXPORT(mana_w_MPI_File_open, MPI_File_open)
MANA_EXPORT(mana_w_MPI_File_open, PMPI_File_open)

__attribute__((used)) static int mana_w_MPI_File_close(MPI_File *fh)
{
    MPI_File f = *fh;
    mana_gate_enter();
    int r;
    MANA_CALL_LOWER_INTO(r, 4472, "PMPI_File_close", int, (MPI_File *), (fh));
    if (r == MPI_SUCCESS)
        file_closed(f);
    mana_gate_leave();
    return r;
}
MANA_EXPORT(mana_w_MPI_File_close, MPI_File_close)
MANA_EXPORT(mana_w_MPI_File_close, PMPI_File_close)
