/* The operations the wrapper library offers the checkpointer (libmana): registered at
 * load time with mana_register_mpi_ops (a function of libmana), so that the library's
 * export set stays exactly MPICH's. Mirrored in upper-half/src/mpi_ckpt.rs: change both. */
#ifndef MANA_OPS_H
#define MANA_OPS_H

#define MANA_MPI_OPS_VERSION 7

struct mana_seq {
    unsigned long long gid, seq;
};

struct mana_count {
    unsigned long long key[3]; /* gid, side, destination rank */
    unsigned long long count;
};

struct mana_mpi_ops {
    unsigned version;
    /* Marks a checkpoint pending; fills up to `cap` (gid, seq) pairs; returns how many
     * there are. */
    int (*coll_snapshot)(struct mana_seq *out, int cap);
    /* Job-wide maxima → targets; returns 1 when this rank has converged. */
    int (*coll_apply)(const struct mana_seq *targets, int n);
    /* Lets a rank frozen at a collective's entry enter one more (stall breaker). */
    void (*coll_grant_pass)(void);
    /* The checkpoint is over: clears pending and targets, frozen threads go on.
     * `agreed`: the collectives converged job-wide (the final sequence numbers of
     * communicators freed since are then known to every rank and can be forgotten). */
    void (*coll_finish)(int agreed);
    /* Closes the gate and waits for every application thread to leave the lower half
     * (0), or gives up after `timeout` seconds (-1, gate open). The calling thread keeps
     * using the lower half. */
    int (*gate_close)(double timeout);
    void (*gate_open)(void);
    /* This rank's send counts; returns how many entries there are (may exceed cap). */
    int (*p2p_sent)(struct mana_count *out, int cap);
    /* One drain round given the job-wide sums of p2p_sent: returns the work left here,
     * or -1 if more messages arrived than were sent. */
    long long (*drain_step)(const struct mana_count *sums, int n);
    /* Drained messages not yet delivered. */
    int (*drained_count)(void);
    /* One poke of the lower half's progress engine (gate closed; the checkpointer's
     * thread waiting for the coordinator: a peer may be inside MPI waiting on this rank). */
    void (*progress)(void);
    /* After the drain (gate closed): records what a restart needs from the lower half;
     * 0, or -1 with why a restart of this image would be refused in `why`. */
    int (*snapshot)(char *why, int len);
    /* Forgets every cached lower-half function (a new lower half is coming). */
    void (*restart_reset)(void);
    /* In a restarted process with a new lower half: MPI_Init, check rank and size, bring
     * back what the application holds; 0, or -1 with a message in `err`. */
    int (*restart)(int rank, int size, char *err, int errlen);
    /* The last restart's seconds in MPI_Init_thread and in re-creating the application's
     * objects (handles rebound, requests posted again). */
    void (*restart_times)(double *init_s, double *rebuild_s);
    /* mana_mpi_phase: 0 before MPI_Init, 1 initialized, 2 finalized (mana_wrap.h). */
    int (*phase)(void);
    /* What the last drain round left on this rank, in words: communicators still expecting
     * messages, requests not complete. Returns the length written into `buf`. */
    int (*drain_report)(char *buf, int len);
    /* The checkpointer's own exchange between ranks after a restart (MPI initialized, the
     * application's threads parked, every rank calling): every rank's byte count into
     * lens[world size]; 0 or -1. */
    int (*allgather_lens)(int len, int *lens);
    /* Then every rank's bytes into `out`, rank after rank (lens from allgather_lens, `size`
     * ranks, their sum fitting an int); 0 or -1. */
    int (*allgather_bytes)(const char *in, int len, char *out, const int *lens, int size);
};

#endif
