/* vecconv's own parallel runtime: a small pool of worker threads and a private BLAS.
 *
 * Why not OpenMP + the process's OpenBLAS (vecconv <= 0.1): the two pools took turns on
 * the same cores and were steered by process-wide knobs (OMP_WAIT_POLICY, OpenBLAS's
 * global thread count). With PyTorch imported first its libgomp served vecconv's regions
 * with its own (spinning) wait policy; libgomp's pool hangs a forked child; a static
 * schedule waits at every barrier for a thread that a busy machine has descheduled.
 *
 * What this file gives instead:
 *  - vc_run(fn, ctx, n_units, threads): the calling thread and up to threads-1 workers
 *    claim units from an atomic counter until none is left. The caller never waits for a
 *    worker that has not started: a worker joins a job only while it is open, so on a
 *    loaded machine the caller simply does more of the units itself. Idle workers sleep
 *    on a condition variable (no spinning). One job at a time uses the workers; a second
 *    caller arriving meanwhile runs its own job alone.
 *  - fork safety: a pthread_atfork child handler forgets the parent's workers; the child
 *    starts its own when it first needs them.
 *  - a process whose OpenMP runtime is already loaded and running by another library
 *    (PyTorch's libgomp): there the job runs on that runtime's threads instead
 *    (vc_omp_body). After each of its parallel regions, libgomp's idle threads spin for
 *    some milliseconds before they sleep; a job of vecconv's own threads started
 *    meanwhile shares the cores with them (a 17 ms job took 19.7 ms right after a
 *    PyTorch convolution, 17.1 after a pause), while a job handed to those same threads
 *    starts at once (17.0 either way). vecconv never loads an OpenMP runtime itself, and
 *    never uses one where its pool may be a parent's (vc_omp_usable: libgomp's pool
 *    hangs a forked child).
 *  - every participant runs with the calling thread's floating-point environment
 *    (flush-to-zero and denormals-are-zero on x86 included): threads made earlier, or by
 *    libgomp, keep their own otherwise, and results would depend on the thread count.
 *  - a private BLAS: SciPy's OpenBLAS has one process-wide thread count
 *    (openblas_set_num_threads_local() changes it for every thread in the pthreads build
 *    that SciPy ships). The engine's workers need single-threaded GEMMs, so the engine
 *    loads its own instance of the same library (the scipy-openblas32 wheel, another
 *    file with its own globals), holds it at one thread, and nobody else calls it.
 */
#ifndef VECCONV_RUNTIME_H
#define VECCONV_RUNTIME_H

/* More threads than this is surely a mistake (the pool would create them); Python reads
   the same number as _engine.MAX_THREADS. */
#define VC_MAX_THREADS 1024

#include <stddef.h>
#include <string.h>

typedef void (*vc_task_fn)(void *ctx, Py_ssize_t unit, int slot);

typedef void (*vc_sgemm_fn)(const char *, const char *, const int *, const int *,
                            const int *, const float *, const float *, const int *,
                            const float *, const int *, const float *, float *, const int *);
typedef void (*vc_dgemm_fn)(const char *, const char *, const int *, const int *,
                            const int *, const double *, const double *, const int *,
                            const double *, const int *, const double *, double *,
                            const int *);

static vc_sgemm_fn vc_private_sgemm = NULL;
static vc_dgemm_fn vc_private_dgemm = NULL;
static void (*vc_private_set_threads)(int) = NULL;
static int (*vc_private_get_threads)(void) = NULL;
static int vc_nthreads = 1;          /* the setting (vecconv.set_num_threads) */

/* What the platform gives, each with a fallback (src/vecconv/meson.build probes them and
   says which are missing):
 *  - the worker pool needs POSIX threads and GCC/Clang atomics: without them (Windows,
 *    or -Dserial=true, which defines VC_NO_THREADS to test this path on Linux) every job
 *    runs on the calling thread;
 *  - the private BLAS needs dlopen/dlsym (VC_NO_DLOPEN when missing, always on Windows):
 *    without it the engine calls SciPy's BLAS, and the GEMM passes run on the calling
 *    thread (_plan.py asks private_blas() before it hands GEMMs to workers). */
#if !defined(_WIN32) && !defined(VC_NO_THREADS) && (defined(__GNUC__) || defined(__clang__))
#define VC_HAVE_THREADS 1
#else
#define VC_HAVE_THREADS 0
#endif
#if !defined(_WIN32) && !defined(VC_NO_DLOPEN)
#define VC_HAVE_DLOPEN 1
#else
#define VC_HAVE_DLOPEN 0
#endif

#if VC_HAVE_THREADS
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <fenv.h>

typedef struct vc_job {
    vc_task_fn fn;
    fenv_t fenv;           /* the calling thread's floating-point environment */
    long long t_caller;    /* OpenMP jobs: when the calling thread ran out of units */
    Py_ssize_t mine;       /* ... and how many it ran */
    void *ctx;
    Py_ssize_t n_units;
    Py_ssize_t next;       /* next unit to claim (atomic) */
    int max_slots;         /* participants allowed, the caller included */
    int slots;             /* participants so far (under vc_mu) */
    int active;            /* workers inside this job (under vc_mu) */
} vc_job;

static pthread_mutex_t vc_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t vc_wake = PTHREAD_COND_INITIALIZER;   /* workers sleep here */
static pthread_cond_t vc_left = PTHREAD_COND_INITIALIZER;   /* callers wait for workers to leave */
static vc_job *vc_current = NULL;    /* the job open to workers, or NULL */
static unsigned long vc_generation = 0;
static int vc_started = 0;           /* workers alive in this process */
static int vc_spawn_failed = 0;      /* pthread_create failed: use the workers there are */

/* A busy machine: a worker that claimed a job's last units finishes them at most about
   one unit's time after the caller ran out of units. When the caller waits longer than
   VC_STALL_UNITS times its own mean time per unit (and at least VC_STALL_MIN_NS), the
   worker was descheduled while holding a unit: other programs want the cores. After two
   such stalls within VC_STALL_WINDOW_NS, the jobs of the next VC_CALM_NS run on the
   calling thread alone, which on a loaded machine is faster (a LeNet-5 step beside two
   busy processes on 2 cores: 7.2 ms on 2 threads, 5.0 on 1; 3.6 idle); then one job
   tries the workers again.
   Results are the same bits for any thread count, so this changes only the time.
   vc_adaptive = 0 (VECCONV_ADAPT_THREADS=0) turns it off. */
#define VC_STALL_UNITS 3.0
#define VC_STALL_MIN_NS 500000LL
#define VC_CALM_NS 200000000LL
#define VC_STALL_WINDOW_NS 100000000LL
static int vc_adaptive = 1;
static long long vc_last_stall = -VC_STALL_WINDOW_NS;   /* monotonic ns; under vc_mu */
static long long vc_calm_until = 0;     /* monotonic ns; under vc_mu */
static long long vc_stalls = 0;         /* stalls seen (under vc_mu) */
static long long vc_calm_jobs = 0;      /* jobs run alone because of one (under vc_mu) */

/* The process's OpenMP runtime (see the top of this file), glibc/Linux only: a libgomp
   found with dl_iterate_phdr among the libraries already loaded (looked for again only
   when the process has loaded more), and used only where vc_omp_usable says its pool is
   this process's. vc_join_omp: the setting (VECCONV_JOIN_OPENMP, and 0 in a
   multiprocessing child: _runtime.py); vc_omp_forked: a fork happened since vecconv was
   loaded (this is the child). */
#if VC_HAVE_DLOPEN && defined(__linux__) && defined(__GLIBC__)
#define VC_JOIN_OMP 1
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <unistd.h>
#include <errno.h>
typedef void (*vc_gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
static vc_gomp_parallel_fn vc_gomp_parallel = NULL;  /* set once, under vc_omp_mu */
static int (*vc_omp_thread_num)(void) = NULL;
static int (*vc_omp_max_threads)(void) = NULL;
static pthread_mutex_t vc_omp_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long vc_omp_adds = 0;  /* libraries loaded at the last look */
#else
#define VC_JOIN_OMP 0
#endif
static int vc_join_omp = 1;
static int vc_omp_forked = 0;
/* A busy machine: at the end of a parallel region libgomp's calling thread waits
   (spinning) for every thread of the team, also one the scheduler has not run yet, where
   vecconv's own pool never waits for a worker that has not started (a LeNet-5 step
   beside two busy processes: 11-15 ms on libgomp's threads, 6-7 ms on vecconv's, 3-4
   idle). After two jobs within VC_STALL_WINDOW_NS whose caller waited so for over
   VC_OMP_STALL_NS, the jobs of a rest run on vecconv's own workers; then they try
   libgomp's threads again. On an idle shared host a sleeping team thread took up to
   3.1 ms to come (41 batch-1 jobs: 90% within 0.4 ms), beside two busy processes
   6-7.5 ms; a rest begun by an idle host's waits cost a batch-1 layer 1.5-2x (it then
   ran beside PyTorch's spinning threads). So a rest starts short, VC_OMP_REST_MIN_NS,
   and doubles with each rest that follows another within VC_OMP_REST_NS of its end, up
   to VC_OMP_REST_NS: a busy machine's stalls, which return at once, reach the long rest
   within a few; an idle host's odd stall costs a short one. These waits are libgomp's and
   feed only this rest, not the stall counts of vecconv's own pool. */
#define VC_OMP_STALL_NS 3500000LL
#define VC_OMP_REST_NS 200000000LL
#define VC_OMP_REST_MIN_NS 10000000LL
static long long vc_omp_rest_until = 0;   /* monotonic ns; under vc_mu */
static long long vc_omp_rest_ns = VC_OMP_REST_MIN_NS;     /* the next rest's length */
static long long vc_omp_rests = 0;      /* rests begun (under vc_mu) */
static long long vc_omp_last_stall = -VC_STALL_WINDOW_NS;
static long long vc_omp_jobs = 0;       /* jobs run on the OpenMP runtime (under vc_mu) */

static long long vc_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A job began at t0, its caller ran `mine` units until t1, and the last participant left
   at t2: whether the caller then waited over min_ns and over VC_STALL_UNITS times its
   own mean time per unit (a participant descheduled while it held a unit, or one that
   came late). */
static int vc_waited(long long t0, long long t1, long long t2, Py_ssize_t mine,
                     long long min_ns) {
    return t2 - t1 > min_ns
        && (double)(t2 - t1) > VC_STALL_UNITS * (double)(t1 - t0)
                               / (double)(mine > 0 ? mine : 1);
}

/* vecconv's own pool (under vc_mu): such a wait counts as a stall. */
static void vc_note_stall(long long t0, long long t1, long long t2, Py_ssize_t mine) {
    if (vc_waited(t0, t1, t2, mine, VC_STALL_MIN_NS)) {
        /* one stall may be the machine's moment (a shared host's steal); a second within
           VC_STALL_WINDOW_NS is a busy machine */
        if (t2 - vc_last_stall < VC_STALL_WINDOW_NS) vc_calm_until = t2 + VC_CALM_NS;
        vc_last_stall = t2;
        vc_stalls++;
    }
}

/* Claim and run units until none is left; returns how many this participant ran. */
static Py_ssize_t vc_claim(vc_job *job, int slot) {
    Py_ssize_t done = 0;
    for (;;) {
        Py_ssize_t u = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (u >= job->n_units) return done;
        job->fn(job->ctx, u, slot);
        done++;
    }
}

static void *vc_worker(void *arg) {
    unsigned long seen = 0;
    (void)arg;
    pthread_mutex_lock(&vc_mu);
    for (;;) {
        vc_job *job;
        int slot;
        while (vc_current == NULL || vc_generation == seen)
            pthread_cond_wait(&vc_wake, &vc_mu);
        seen = vc_generation;
        job = vc_current;
        if (job->slots >= job->max_slots) continue;
        slot = job->slots++;
        job->active++;
        pthread_mutex_unlock(&vc_mu);
        fesetenv(&job->fenv);       /* the caller's (a worker has no other use for its own) */
        vc_claim(job, slot);
        pthread_mutex_lock(&vc_mu);
        if (--job->active == 0) pthread_cond_broadcast(&vc_left);
    }
    return NULL;
}

static void vc_fork_prepare(void) { pthread_mutex_lock(&vc_mu); }
static void vc_fork_parent(void) { pthread_mutex_unlock(&vc_mu); }
static void vc_fork_child(void) {
    /* Only the forking thread exists in the child: the workers and any open job are the
       parent's. Start from nothing; workers are created again when first needed. */
    pthread_mutex_init(&vc_mu, NULL);
    pthread_cond_init(&vc_wake, NULL);
    pthread_cond_init(&vc_left, NULL);
    vc_current = NULL;
    vc_started = 0;
    vc_spawn_failed = 0;
    vc_calm_until = 0;
    vc_last_stall = -VC_STALL_WINDOW_NS;
    vc_omp_forked = 1;
    vc_omp_rest_until = 0;
    vc_omp_rest_ns = VC_OMP_REST_MIN_NS;
    vc_omp_last_stall = -VC_STALL_WINDOW_NS;
#if VC_JOIN_OMP
    pthread_mutex_init(&vc_omp_mu, NULL);
#endif
}

/* Called once when the module is imported, before any worker exists: the fork handlers
   are in place before the first fork that could find a worker or the lock held. */
#if VC_JOIN_OMP
static void vc_omp_import(void);
#endif
static void vc_runtime_init(void) {
    pthread_atfork(vc_fork_prepare, vc_fork_parent, vc_fork_child);
#if VC_JOIN_OMP
    vc_omp_import();
#endif
}

/* A worker takes no signals: Python's handlers run in the main thread, and a signal
   delivered to a worker would only delay it. */
static int vc_spawn_worker(void) {
    pthread_t t;
    pthread_attr_t attr;
    sigset_t all, old;
    int ok;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    ok = pthread_create(&t, &attr, vc_worker, NULL) == 0;
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return ok;
}

static int vc_workers_started(void) { return vc_started; }


#if VC_JOIN_OMP
static int vc_count_adds(struct dl_phdr_info *info, size_t size, void *data) {
    if (size >= offsetof(struct dl_phdr_info, dlpi_adds) + sizeof(info->dlpi_adds))
        *(unsigned long long *)data = info->dlpi_adds;
    return 1;                           /* (the count is in every entry: one is enough) */
}

#define VC_OMP_NAMES 4
typedef struct { char name[VC_OMP_NAMES][4096]; int n; } vc_omp_names;

/* The loaded objects whose file name starts with "libgomp" (at most VC_OMP_NAMES). */
static vc_omp_names vc_omp_found;       /* (under vc_omp_mu, or at import) */
static int vc_find_gomp(struct dl_phdr_info *info, size_t size, void *data) {
    vc_omp_names *found = (vc_omp_names *)data;
    const char *base;
    (void)size;
    if (info->dlpi_name == NULL) return 0;
    base = strrchr(info->dlpi_name, '/');
    base = base ? base + 1 : info->dlpi_name;
    if (strncmp(base, "libgomp", 7) != 0 || found->n == VC_OMP_NAMES) return 0;
    strncpy(found->name[found->n], info->dlpi_name, 4095);
    found->name[found->n][4095] = 0;
    found->n++;
    return 0;
}

/* Look for a libgomp that is loaded already (under vc_omp_mu, never vc_mu: the loader's
   lock is taken here). RTLD_NOLOAD never loads one; the handle kept holds it in the
   process. The first whose entry points all resolve is used. */
static int vc_scan_gomp(void) {
    vc_omp_found.n = 0;
    dl_iterate_phdr(vc_find_gomp, &vc_omp_found);
    return vc_omp_found.n;
}

static void vc_look_for_omp(void) {
    unsigned long long adds = 0;
    int i, n;
    dl_iterate_phdr(vc_count_adds, &adds);
    if (adds == vc_omp_adds) return;
    vc_omp_adds = adds;
    n = vc_scan_gomp();
    for (i = 0; i < n; i++) {
        void *h = dlopen(vc_omp_found.name[i], RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
        void *par, *num, *max;
        if (h == NULL) continue;
        par = dlsym(h, "GOMP_parallel");
        num = dlsym(h, "omp_get_thread_num");
        max = dlsym(h, "omp_get_max_threads");
        if (par != NULL && num != NULL && max != NULL) {
            vc_omp_thread_num = (int (*)(void))num;
            vc_omp_max_threads = (int (*)(void))max;
            __atomic_store_n(&vc_gomp_parallel, (vc_gomp_parallel_fn)par, __ATOMIC_RELEASE);
            return;
        }
        dlclose(h);
    }
}

/* The first bytes of a /proc file (0: unreadable). */
static size_t vc_read_proc(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    size_t n;
    if (f == NULL) return 0;
    n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

/* Whether this process may hold a copy of its parent's libgomp pool: it was forked and
   has not exec'd since. The auxiliary vector is set at exec (its entries hold addresses
   of the new stack, AT_RANDOM's among them) and copied by fork, so a forked child's
   equals its parent's, byte for byte, and an exec'd one's does not. Unreadable: assumed
   so. The parent read must be the one that forked it: an orphan (reparented to init, or
   its process group's leader gone) or a daemon (a session leader, as after setsid)
   cannot tell, and is assumed so too. Looked at once, when vecconv is imported, and only
   if libgomp is loaded by then (else every later fork passes vecconv's fork handler).
   What still passes: a child whose parent exec'd after the fork, or that a subreaper
   adopted while its group's leader lives (PyTorch's own parallel calls hang in such a
   child too); VECCONV_JOIN_OPENMP=0 is the way out there. */
static int vc_forked_from_parent(void) {
    static char mine[4096], theirs[4096];
    char path[64];
    size_t a, b;
    pid_t parent = getppid(), group = getpgid(0);
    if (parent <= 1 || getsid(0) == getpid()) return 1;
    if (group != getpid() && kill(group, 0) != 0 && errno == ESRCH) return 1;  /* orphaned */
    a = vc_read_proc("/proc/self/auxv", mine, sizeof mine);
    snprintf(path, sizeof path, "/proc/%ld/auxv", (long)parent);
    b = vc_read_proc(path, theirs, sizeof theirs);
    return a == 0 || b == 0 || (a == b && memcmp(mine, theirs, a) == 0);
}

/* Whether a job of `threads` may go to libgomp (under vc_mu, vc_gomp_parallel set). Its
   pool must be this process's, not a parent's copy without threads (libgomp's pool hangs
   a child forked after it ran): a child forked after vecconv was loaded knows it from
   vecconv's fork handler; one that loads vecconv only after the fork compares its
   auxiliary vector with its parent's, once (vc_forked_from_parent). libgomp's thread
   setting here (omp_get_max_threads: PyTorch's set_num_threads, 1 in its DataLoader
   workers) must allow the team; the team is always that setting, so that libgomp keeps
   its threads from call to call. */
static int vc_omp_state = 1;       /* 1: this process's pool (vc_omp_import), -1: not */
static int vc_omp_usable(int threads, long long now) {
    if (!vc_join_omp || vc_omp_forked || now < vc_omp_rest_until) return 0;
    return vc_omp_state > 0 && vc_omp_max_threads() >= threads;
}

/* At import: a libgomp loaded already may be a parent's copy (vc_forked_from_parent). */
static void vc_omp_import(void) {
    if (vc_scan_gomp() > 0 && vc_forked_from_parent()) vc_omp_state = -1;
}

/* Each thread of the OpenMP team claims units, its team number its slot (threads past
   the job's slots leave at once), in the caller's floating-point environment. */
static void vc_omp_body(void *arg) {
    vc_job *job = (vc_job *)arg;
    int slot = vc_omp_thread_num();
    Py_ssize_t mine;
    fenv_t own;
    if (slot < 0 || slot >= job->max_slots) return;
    if (slot == 0) {
        mine = vc_claim(job, 0);
        job->mine = mine;
        job->t_caller = vc_now_ns();
        return;
    }
    fegetenv(&own);
    fesetenv(&job->fenv);
    vc_claim(job, slot);
    fesetenv(&own);
}
#endif

static void vc_run_serial(vc_task_fn fn, void *ctx, Py_ssize_t n_units) {
    Py_ssize_t u;
    for (u = 0; u < n_units; u++) fn(ctx, u, 0);
}

/* Run units 0..n_units-1 of fn with at most `threads` participants; returns when all
   are done. Called without the GIL. */
static void vc_run(vc_task_fn fn, void *ctx, Py_ssize_t n_units, int threads) {
    vc_job job;
    long long t0, t1, t2;
    Py_ssize_t mine;
    if (threads <= 1 || n_units <= 1) { vc_run_serial(fn, ctx, n_units); return; }
    if (threads > n_units) threads = (int)n_units;
#if VC_JOIN_OMP
    if (__atomic_load_n(&vc_gomp_parallel, __ATOMIC_ACQUIRE) == NULL
            && __atomic_load_n(&vc_join_omp, __ATOMIC_RELAXED)
            && !__atomic_load_n(&vc_omp_forked, __ATOMIC_RELAXED)) {
        pthread_mutex_lock(&vc_omp_mu);
        vc_look_for_omp();
        pthread_mutex_unlock(&vc_omp_mu);
    }
#endif
    pthread_mutex_lock(&vc_mu);
    if (vc_current != NULL) {           /* another thread's job has the workers */
        pthread_mutex_unlock(&vc_mu);
        vc_run_serial(fn, ctx, n_units);
        return;
    }
    t0 = vc_now_ns();
    if (vc_adaptive && t0 < vc_calm_until) {     /* a busy machine: the caller alone */
        vc_calm_jobs++;
        pthread_mutex_unlock(&vc_mu);
        vc_run_serial(fn, ctx, n_units);
        return;
    }
    job.fn = fn; job.ctx = ctx; job.n_units = n_units; job.next = 0;
    job.max_slots = threads; job.slots = 1; job.active = 0;
    job.mine = 0; job.t_caller = t0;
    fegetenv(&job.fenv);
#if VC_JOIN_OMP
    if (vc_gomp_parallel != NULL && vc_omp_usable(threads, t0)) {
        int team = vc_omp_max_threads();
        job.slots = threads;        /* (full: none of vecconv's own workers joins) */
        vc_current = &job;          /* a second caller meanwhile runs its job alone */
        vc_omp_jobs++;
        pthread_mutex_unlock(&vc_mu);
        vc_gomp_parallel(vc_omp_body, &job, (unsigned)team, 0);
        t2 = vc_now_ns();
        pthread_mutex_lock(&vc_mu);
        vc_current = NULL;
        if (vc_waited(t0, job.t_caller, t2, job.mine, VC_OMP_STALL_NS)) {
            if (t2 - vc_omp_last_stall < VC_STALL_WINDOW_NS) {
                /* a rest soon after the last one's end: twice as long; else the shortest */
                if (t2 - vc_omp_rest_until < VC_OMP_REST_NS)
                    vc_omp_rest_ns = vc_omp_rest_ns * 2 < VC_OMP_REST_NS
                                     ? vc_omp_rest_ns * 2 : VC_OMP_REST_NS;
                else
                    vc_omp_rest_ns = VC_OMP_REST_MIN_NS;
                vc_omp_rest_until = t2 + vc_omp_rest_ns;
                vc_omp_rests++;
            }
            vc_omp_last_stall = t2;
        }
        pthread_mutex_unlock(&vc_mu);
        return;
    }
#endif
    while (vc_started < threads - 1 && !vc_spawn_failed) {
        if (!vc_spawn_worker()) { vc_spawn_failed = 1; break; }
        vc_started++;
    }
    if (vc_started > 0) {
        int w;
        vc_current = &job;
        vc_generation++;
        /* wake as many workers as the job can take, not every idle one */
        for (w = 0; w < threads - 1 && w < vc_started; w++) pthread_cond_signal(&vc_wake);
    }
    pthread_mutex_unlock(&vc_mu);
    mine = vc_claim(&job, 0);
    t1 = vc_now_ns();
    pthread_mutex_lock(&vc_mu);
    if (vc_current == &job) vc_current = NULL;     /* closed: no worker joins from now on */
    while (job.active > 0) pthread_cond_wait(&vc_left, &vc_mu);
    t2 = vc_now_ns();
    vc_note_stall(t0, t1, t2, mine);
    pthread_mutex_unlock(&vc_mu);
}

/* Whether jobs may go to the process's OpenMP runtime (VECCONV_JOIN_OPENMP) and, for
   tests, the end of a rest from now (ns; < 0 keeps it) and `trust`: take this process's
   libgomp pool as its own whatever vc_omp_import concluded; and how many jobs went
   there, -1 where this build cannot. */
static void vc_set_join_omp(int on, long long rest_for_ns, int trust) {
    pthread_mutex_lock(&vc_mu);
    vc_join_omp = on;
    if (rest_for_ns >= 0) vc_omp_rest_until = rest_for_ns ? vc_now_ns() + rest_for_ns : 0;
#if VC_JOIN_OMP
    if (trust) vc_omp_state = 1;
#else
    (void)trust;
#endif
    pthread_mutex_unlock(&vc_mu);
}
static long long vc_omp_job_count(long long *rests) {
    long long n;
    pthread_mutex_lock(&vc_mu);
    n = VC_JOIN_OMP ? vc_omp_jobs : -1;
    *rests = VC_JOIN_OMP ? vc_omp_rests : -1;
    pthread_mutex_unlock(&vc_mu);
    return n;
}

/* Python's view of the stall policy: (stalls seen, jobs run alone because of them). */
static void vc_stall_counts(long long *stalls, long long *calm_jobs) {
    pthread_mutex_lock(&vc_mu);
    *stalls = vc_stalls;
    *calm_jobs = vc_calm_jobs;
    pthread_mutex_unlock(&vc_mu);
}

/* Set the policy (on/off) and, for tests, the calm period's end from now (ns; < 0 keeps
   it). */
static void vc_set_stall_policy(int adaptive, long long calm_for_ns) {
    pthread_mutex_lock(&vc_mu);
    vc_adaptive = adaptive;
    if (calm_for_ns >= 0) vc_calm_until = calm_for_ns ? vc_now_ns() + calm_for_ns : 0;
    pthread_mutex_unlock(&vc_mu);
}

#else   /* no worker pool: every job runs in the calling thread */

static void vc_runtime_init(void) {}
static int vc_workers_started(void) { return 0; }
static void vc_set_join_omp(int on, long long rest_for_ns, int trust) {
    (void)on; (void)rest_for_ns; (void)trust;
}
static long long vc_omp_job_count(long long *rests) { *rests = -1; return -1; }
static void vc_stall_counts(long long *stalls, long long *calm_jobs) {
    *stalls = 0;
    *calm_jobs = 0;
}
static void vc_set_stall_policy(int adaptive, long long calm_for_ns) {
    (void)adaptive;
    (void)calm_for_ns;
}
static void vc_run(vc_task_fn fn, void *ctx, Py_ssize_t n_units, int threads) {
    Py_ssize_t u;
    (void)threads;
    for (u = 0; u < n_units; u++) fn(ctx, u, 0);
}

#endif

#if VC_HAVE_DLOPEN
#include <dlfcn.h>

/* Load a private OpenBLAS (scipy-openblas32's library) and hold it at one thread.
   Returns 1 on success, 0 when it cannot be used (the engine then keeps SciPy's BLAS). */
static int vc_load_private_blas(const char *path) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (h != NULL) {
        /* already in the process (a SciPy or NumPy built against this very wheel): it is
           not ours to hold at one thread */
        dlclose(h);
        return 0;
    }
    h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) return 0;
    vc_private_sgemm = (vc_sgemm_fn)dlsym(h, "scipy_sgemm_");
    vc_private_dgemm = (vc_dgemm_fn)dlsym(h, "scipy_dgemm_");
    vc_private_set_threads = (void (*)(int))dlsym(h, "scipy_openblas_set_num_threads");
    vc_private_get_threads = (int (*)(void))dlsym(h, "scipy_openblas_get_num_threads");
    if (!vc_private_sgemm || !vc_private_dgemm || !vc_private_set_threads ||
            !vc_private_get_threads) {
        vc_private_sgemm = NULL; vc_private_dgemm = NULL;
        vc_private_set_threads = NULL; vc_private_get_threads = NULL;
        dlclose(h);
        return 0;
    }
    vc_private_set_threads(1);
    return 1;
}

#else   /* no dlopen: the engine keeps SciPy's BLAS */

static int vc_load_private_blas(const char *path) { (void)path; return 0; }

#endif

static int vc_have_threads(void) { return VC_HAVE_THREADS; }
static int vc_private_blas(void) { return vc_private_sgemm != NULL; }

/* The private BLAS is ours alone, but threadpoolctl sees it like any OpenBLAS and a
   threadpool_limits(n) would change it too: put it back to one thread before each call. */
static void vc_private_blas_single(void) {
    if (vc_private_get_threads != NULL && vc_private_get_threads() != 1)
        vc_private_set_threads(1);
}

/* A flag that several units may raise at once (an error found in a worker): an atomic
   store, so that the race is a defined one. */
static void vc_flag(int *flag) {
#if defined(__GNUC__) || defined(__clang__)
    __atomic_store_n(flag, 1, __ATOMIC_RELAXED);
#else
    *flag = 1;
#endif
}

static int vc_get_num_threads(void) { return vc_nthreads; }
static void vc_set_num_threads(int n) { vc_nthreads = n < 1 ? 1 : (n > VC_MAX_THREADS ? VC_MAX_THREADS : n); }

/* For threadpoolctl's custom-controller API: plain C symbols it can call by ctypes. */
#if defined(_WIN32)
#define VC_EXPORT __declspec(dllexport)
#else
#define VC_EXPORT __attribute__((visibility("default")))
#endif
VC_EXPORT int vecconv_get_num_threads(void) { return vc_nthreads; }
VC_EXPORT void vecconv_set_num_threads(int n) { vc_set_num_threads(n); }

#endif
