// A C++ MPI program (built with mpicxx.mpich; the C API, as C++ codes use it since the C++
// bindings were removed): std::vector buffers, RAII wrappers that free communicators and
// operations in destructors, global objects constructed before MPI_Init, std::cout, user
// reduction operations written in C++ (a static member function and captureless lambdas
// converted to MPI_User_function pointers, one of them non-commutative), and a user error
// handler (MPI_Comm_create_errhandler with a static member function that records the error
// class; g++ cannot convert a variadic lambda) invoked by erroneous calls, by
// MPI_Comm_call_errhandler with a user error class and code (MPI_Add_error_class/code/
// string), next to MPI_ERRORS_RETURN; and a handler made with MPICH's C++ binding
// (MPI::Comm::Create_errhandler, libmpichcxx: MPII_Errhandler_set_cxx), which must run
// exactly once per error, the erroneous call then returning MPI_SUCCESS, as natively (the
// binding calls the handler itself when a call returns an error). 2 or more ranks.
//
// `--loop N` (for checkpoint/restart at random instants): the ops, the error handler, the
// communicators carrying it and the vectors are held across N rounds (20 ms pause each);
// rank 0 prints "cxx_ops ready" and the final "cxx_ops done: ..." line.
#include <mpi.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

int rank_ = 0, size_ = 1;
int bad = 0;
std::string first_bad;

void check(bool ok, const std::string &what)
{
    if (!ok && bad++ == 0)
        first_bad = what;
}

std::uint64_t csum = 14695981039346656037ULL;
void mix(std::uint64_t v)
{
    csum = (csum ^ v) * 1099511628211ULL;
    csum ^= csum >> 29;
}

// A global with a constructor that runs before main (and before MPI_Init).
struct Registry {
    std::vector<std::string> events;
    int calls_sum = 0, calls_affine = 0, calls_maxloc = 0;
    Registry() { events.reserve(64); }
} registry;

// The error handler's record: every class it saw, in order.
std::vector<int> errors_seen;
std::vector<MPI_Comm> errors_on;
// The C++ binding's handler: classes it saw.
std::vector<int> cxx_errors_seen;
MPI_Comm cxx_errors_comm = MPI_COMM_NULL;

// Affine maps x -> a*x + b (mod P), composed: a non-commutative, associative operation.
constexpr std::int64_t P = 1000003;
struct Affine {
    std::int64_t a, b;
};

struct Ops {
    // A static member function used as an MPI_User_function.
    static void affine_compose(void *in, void *inout, int *len, MPI_Datatype *dt)
    {
        (void)dt;
        registry.calls_affine++;
        auto *x = static_cast<Affine *>(in);
        auto *y = static_cast<Affine *>(inout);
        for (int i = 0; i < *len; i++) {
            // (y ∘ x)(t) = y.a*(x.a*t + x.b) + y.b : x is applied first (lower ranks)
            Affine r{(y[i].a * x[i].a) % P, (y[i].a * x[i].b + y[i].b) % P};
            y[i] = r;
        }
    }

    // The error handler (a variadic static member: g++ cannot convert a variadic lambda).
    static void record_error(MPI_Comm *c, int *code, ...)
    {
        int cls;
        MPI_Error_class(*code, &cls);
        errors_seen.push_back(cls);
        errors_on.push_back(*c);
    }

    // A handler of MPICH's C++ binding.
    static void cxx_record(MPI::Comm &c, int *code, ...)
    {
        int cls;
        MPI_Error_class(*code, &cls);
        cxx_errors_seen.push_back(static_cast<MPI_Comm>(c) == cxx_errors_comm ? cls : -cls);
    }
};

// RAII: a communicator freed by its destructor.
class Comm {
public:
    explicit Comm(MPI_Comm parent)
    {
        MPI_Comm_dup(parent, &c_);
    }
    ~Comm()
    {
        if (c_ != MPI_COMM_NULL)
            MPI_Comm_free(&c_);
    }
    Comm(const Comm &) = delete;
    Comm &operator=(const Comm &) = delete;
    MPI_Comm get() const { return c_; }

private:
    MPI_Comm c_ = MPI_COMM_NULL;
};

// RAII: an operation freed by its destructor.
class Op {
public:
    Op(MPI_User_function *f, bool commute) { MPI_Op_create(f, commute ? 1 : 0, &op_); }
    ~Op()
    {
        if (op_ != MPI_OP_NULL)
            MPI_Op_free(&op_);
    }
    Op(const Op &) = delete;
    Op &operator=(const Op &) = delete;
    MPI_Op get() const { return op_; }

private:
    MPI_Op op_ = MPI_OP_NULL;
};

struct World {
    MPI_Datatype affine_t = MPI_DATATYPE_NULL;
    std::unique_ptr<Op> sum_sq, affine, maxloc;
    MPI_Errhandler recorder = MPI_ERRHANDLER_NULL;
    std::unique_ptr<Comm> recorded, returning, cxx_handled;
    MPI::Errhandler cxx_eh;
    int my_class = 0, my_code = 0;

    World()
    {
        MPI_Type_contiguous(2, MPI_INT64_T, &affine_t);
        MPI_Type_commit(&affine_t);
        // Captureless lambdas converted to plain function pointers.
        MPI_User_function *sq = [](void *in, void *inout, int *len, MPI_Datatype *) {
            registry.calls_sum++;
            auto *x = static_cast<long *>(in);
            auto *y = static_cast<long *>(inout);
            for (int i = 0; i < *len; i++)
                y[i] = (y[i] + x[i]) % 1000000007L;
        };
        sum_sq = std::make_unique<Op>(sq, true);
        affine = std::make_unique<Op>(&Ops::affine_compose, false);
        maxloc = std::make_unique<Op>(
            +[](void *in, void *inout, int *len, MPI_Datatype *) {
                registry.calls_maxloc++;
                auto *x = static_cast<std::array<int, 2> *>(in);
                auto *y = static_cast<std::array<int, 2> *>(inout);
                for (int i = 0; i < *len; i++)
                    if (x[i][0] > y[i][0] || (x[i][0] == y[i][0] && x[i][1] < y[i][1]))
                        y[i] = x[i];
            },
            true);
        MPI_Comm_create_errhandler(&Ops::record_error, &recorder);
        recorded = std::make_unique<Comm>(MPI_COMM_WORLD);
        MPI_Comm_set_errhandler(recorded->get(), recorder);
        returning = std::make_unique<Comm>(MPI_COMM_WORLD);
        MPI_Comm_set_errhandler(returning->get(), MPI_ERRORS_RETURN);
        cxx_eh = MPI::Comm::Create_errhandler(&Ops::cxx_record);
        cxx_handled = std::make_unique<Comm>(MPI_COMM_WORLD);
        cxx_errors_comm = cxx_handled->get();
        MPI::Intracomm(cxx_errors_comm).Set_errhandler(cxx_eh);
        MPI_Add_error_class(&my_class);
        MPI_Add_error_code(my_class, &my_code);
        MPI_Add_error_string(my_code, "cxx_ops: an application-defined error");
    }
    ~World()
    {
        recorded.reset();
        returning.reset();
        cxx_handled.reset();
        cxx_eh.Free();
        MPI_Errhandler_free(&recorder);
        sum_sq.reset();
        affine.reset();
        maxloc.reset();
        MPI_Type_free(&affine_t);
    }
};

// One round of work with the long-lived objects; r is the round.
void round(World &w, int r)
{
    MPI_Comm rc = w.recorded->get(), ret = w.returning->get();

    // 1. a commutative user op (a modular sum) on a std::vector<long> of squares
    std::vector<long> v(7), out(7);
    for (int i = 0; i < 7; i++) {
        long x = (rank_ + 1) * (i + 1) + r;
        v[i] = x * x;
    }
    MPI_Allreduce(v.data(), out.data(), 7, MPI_LONG, w.sum_sq->get(), rc);
    for (int i = 0; i < 7; i++) {
        long want = 0;
        for (int q = 0; q < size_; q++) {
            long x = (q + 1) * (i + 1) + r;
            want = (want + x * x) % 1000000007L;
        }
        check(out[i] == want, "sum of squares");
        mix(static_cast<std::uint64_t>(out[i]));
    }

    // 2. a non-commutative op: rank order is respected in Reduce, Allreduce and Scan
    std::vector<Affine> maps(3), composed(3), scanned(3);
    for (int i = 0; i < 3; i++)
        maps[i] = Affine{2 + rank_ + i + r % 5, rank_ * 10 + i + r};
    MPI_Allreduce(maps.data(), composed.data(), 3, w.affine_t, w.affine->get(), rc);
    MPI_Scan(maps.data(), scanned.data(), 3, w.affine_t, w.affine->get(), rc);
    for (int i = 0; i < 3; i++) {
        Affine want{1, 0}, pref{1, 0};
        for (int q = 0; q < size_; q++) {
            Affine m{2 + q + i + r % 5, q * 10 + i + r};
            want = Affine{(m.a * want.a) % P, (m.a * want.b + m.b) % P};
            if (q == rank_)
                pref = want;
        }
        check(composed[i].a == want.a && composed[i].b == want.b, "affine allreduce");
        check(scanned[i].a == pref.a && scanned[i].b == pref.b, "affine scan");
        mix(static_cast<std::uint64_t>(composed[i].a * P + composed[i].b));
        mix(static_cast<std::uint64_t>(scanned[i].a * P + scanned[i].b));
    }
    std::vector<Affine> at_root(3);
    int root = r % size_;
    MPI_Reduce(maps.data(), at_root.data(), 3, w.affine_t, w.affine->get(), root, rc);
    if (rank_ == root) {
        check(at_root[0].a == composed[0].a && at_root[0].b == composed[0].b, "affine reduce");
        mix(static_cast<std::uint64_t>(at_root[2].b));
    }

    // 3. a lambda op on std::array pairs (a maxloc with the lowest index on ties)
    std::array<int, 2> mine{(rank_ * 7 + r) % 5, rank_}, best{};
    MPI_Datatype pair_t;
    MPI_Type_contiguous(2, MPI_INT, &pair_t);
    MPI_Type_commit(&pair_t);
    MPI_Allreduce(&mine, &best, 1, pair_t, w.maxloc->get(), rc);
    MPI_Type_free(&pair_t);
    {
        std::array<int, 2> want{-1, 0};
        for (int q = 0; q < size_; q++) {
            int val = (q * 7 + r) % 5;
            if (val > want[0])
                want = {val, q};
        }
        check(best == want, "maxloc lambda");
        mix(static_cast<std::uint64_t>(best[0] * 100 + best[1]));
    }

    // 4. errors: the recorder sees the class, MPI_ERRORS_RETURN only returns it
    std::size_t before = errors_seen.size();
    int x = r;
    int code = MPI_Send(&x, 1, MPI_INT, size_ + r, 0, rc); // no such rank
    int cls;
    MPI_Error_class(code, &cls);
    check(cls == MPI_ERR_RANK, "recorded send returns MPI_ERR_RANK");
    check(errors_seen.size() == before + 1 && errors_seen.back() == MPI_ERR_RANK &&
              errors_on.back() == rc,
          "recorder saw MPI_ERR_RANK on its communicator");
    code = MPI_Bcast(&x, -1, MPI_INT, 0, rc); // negative count
    MPI_Error_class(code, &cls);
    check(cls == MPI_ERR_COUNT, "recorded bcast returns MPI_ERR_COUNT");
    check(errors_seen.size() == before + 2 && errors_seen.back() == MPI_ERR_COUNT,
          "recorder saw MPI_ERR_COUNT");
    MPI_Comm_call_errhandler(rc, w.my_code);
    check(errors_seen.size() == before + 3 && errors_seen.back() == w.my_class,
          "recorder saw the user class");
    code = MPI_Recv(&x, 1, MPI_INT, 0, -5 - r, ret, MPI_STATUS_IGNORE); // negative tag
    MPI_Error_class(code, &cls);
    check(cls == MPI_ERR_TAG, "ERRORS_RETURN recv returns MPI_ERR_TAG");
    check(errors_seen.size() == before + 3, "ERRORS_RETURN does not call the recorder");
    MPI_Errhandler eh;
    MPI_Comm_get_errhandler(rc, &eh);
    check(eh == w.recorder, "the recorder is still set");
    MPI_Errhandler_free(&eh);
    char s[MPI_MAX_ERROR_STRING];
    int len;
    MPI_Error_string(w.my_code, s, &len);
    check(std::string(s, len) == "cxx_ops: an application-defined error", "user error string");
    for (std::size_t i = before; i < errors_seen.size(); i++)
        mix(static_cast<std::uint64_t>(errors_seen[i] == w.my_class ? 999 : errors_seen[i]));

    // 5. a short-lived RAII communicator inheriting the recorder (dup copies errhandlers)
    {
        Comm tmp(rc);
        int sum = 0, one = 1;
        MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, tmp.get());
        check(sum == size_, "tmp allreduce");
        code = MPI_Send(&x, 1, MPI_INT, -7, 0, tmp.get());
        check(errors_seen.size() == before + 4 && errors_on.back() == tmp.get(),
              "dup inherited the recorder");
        mix(static_cast<std::uint64_t>(sum));
    }

    // 6. the C++ binding's handler: one call per error, through the binding and the C API
    {
        std::size_t n = cxx_errors_seen.size();
        bool threw = false;
        try {
            MPI::Intracomm(cxx_errors_comm).Iprobe(size_ + r, 0); // no such rank
        } catch (MPI::Exception &) {
            threw = true;
        }
        check(!threw, "C++ handler: the binding threw");
        check(cxx_errors_seen.size() == n + 1 && cxx_errors_seen.back() == MPI_ERR_RANK,
              "C++ handler ran once with MPI_ERR_RANK on its communicator (binding)");
        int flag = 0;
        code = MPI_Iprobe(size_ + r, 0, cxx_errors_comm, &flag, MPI_STATUS_IGNORE);
        check(code == MPI_SUCCESS, "C++ handler: the C call returns MPI_SUCCESS after it");
        check(cxx_errors_seen.size() == n + 2 && cxx_errors_seen.back() == MPI_ERR_RANK,
              "C++ handler ran once with MPI_ERR_RANK on its communicator (C API)");
        for (std::size_t i = n; i < cxx_errors_seen.size(); i++)
            mix(static_cast<std::uint64_t>(cxx_errors_seen[i] + 1000));
    }
}

} // namespace

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    int rounds = 3;
    bool loop = false;
    if (argc > 1 && std::strcmp(argv[1], "--loop") == 0) {
        rounds = argc > 2 ? std::atoi(argv[2]) : 0;
        loop = true;
        if (rounds < 1) {
            if (rank_ == 0)
                std::cerr << "usage: cxx_ops [--loop N] (N >= 1)\n";
            MPI_Finalize();
            return 2;
        }
    }
    if (size_ < 2) {
        if (rank_ == 0)
            std::cerr << "cxx_ops needs 2 or more ranks\n";
        MPI_Finalize();
        return 2;
    }
    registry.events.push_back("init");
    int total_bad = 0;
    long tot[4] = {0, 0, 0, 0};
    {
        World w;
        if (loop && rank_ == 0)
            std::cout << "cxx_ops ready" << std::endl;
        for (int r = 0; r < rounds; r++) {
            round(w, r);
            if (loop)
                usleep(20000);
        }
        long mine[4] = {registry.calls_affine > 0, registry.calls_maxloc > 0,
                        static_cast<long>(errors_seen.size()), bad};
        MPI_Allreduce(mine, tot, 4, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
        total_bad = static_cast<int>(tot[3]);
    } // World's destructor frees everything
    std::vector<unsigned long long> sums(size_);
    unsigned long long c = csum;
    MPI_Gather(&c, 1, MPI_UNSIGNED_LONG_LONG, sums.data(), 1, MPI_UNSIGNED_LONG_LONG, 0,
               MPI_COMM_WORLD);
    if (rank_ == 0) {
        csum = 14695981039346656037ULL;
        for (auto s : sums)
            mix(s);
        std::ostringstream line;
        line << (loop ? "cxx_ops done: " : "cxx_ops: ") << std::hex << csum << std::dec
             << " ranks calling ops " << tot[0] << "/" << tot[1] << " errors recorded "
             << tot[2] << " failed checks: " << total_bad;
        std::cout << line.str() << std::endl;
    }
    if (bad)
        std::cerr << "rank " << rank_ << ": " << bad << " failed checks, first: " << first_bad
                  << std::endl;
    MPI_Finalize();
    return total_bad != 0;
}
