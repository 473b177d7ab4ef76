// The hostile-input regression suite: every case of tests/data/hostile/cases.tsv (committed inputs)
// and of the systematic families make_hostile_inputs generates at test time runs the tern CLI, and
// must meet the contract of a bad input:
//   - exit code 1 (bad input) or 2 (usage error), as the case expects (some cases also accept 0:
//     inputs that are odd but valid, where a correct result is as good as a clean refusal);
//   - exactly one line on stderr, starting with "tern: " and containing the case's needle (the
//     input or option as given on the command line), and never "internal error", "std::",
//     "terminate", "Segmentation", ...;
//   - done within 60 s of wall-clock time, and not blocked without using CPU for 20 s (hang
//     detectors only; nothing else here depends on timing);
//   - a peak RSS (wait4's ru_maxrss) under 1 GiB, with RLIMIT_AS at 8 GiB as a safety net;
//   - no file created or modified in the case's working directory (where outputs go), the input
//     itself untouched.
// Children get TERN_MAX_MEMORY=1G unless the case sets it, so that refusals do not depend on the
// machine's memory.
//
// One test per category; inside it the cases run in parallel (HOSTILE_JOBS, default 2).
//   test_hostile_inputs --report [CATEGORY...]   per category: tried, clean, and every failure.
// Other settings: HOSTILE_TIMEOUT_S (60), HOSTILE_TERN (another tern binary, e.g. a sanitizer
// build), HOSTILE_SAMPLE (scales the generated families' sample sizes, default 1), HOSTILE_KEEP=1
// keeps the temporary directory.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace {

namespace fs = std::filesystem;

constexpr int64_t kRssLimitKiB = 1 << 20;             // 1 GiB
constexpr int64_t kRssKillKiB = 2 * kRssLimitKiB;     // stop a runaway child well before the box suffers
constexpr uint64_t kAddressSpaceLimit = uint64_t{8} << 30;
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kUnderAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kUnderAddressSanitizer = true;
#else
constexpr bool kUnderAddressSanitizer = false;
#endif
#else
constexpr bool kUnderAddressSanitizer = false;
#endif
constexpr double kIdleSeconds = 20;                   // blocked with no CPU time used: a hang

// "needs -": a negative byte count (an overflowed size) in a message.
const char* const kForbidden[] = {"internal error", "std::", "terminate", "Segmentation", "what()", "Aborted",
                                  "core dumped", "max_size", "needs -", "bad_alloc"};

// control: ordinary commands that must succeed under the same limits (the harness itself works).
const std::vector<std::string> kCategories = {"control", "crash",         "alloc",         "hang",          "wrong-answer",
                                              "unclear-error", "sys-truncated", "sys-init-dims", "sys-attrs",
                                              "sys-npy",       "sys-idx",       "sys-tern-json"};

struct Case {
  std::string category, name, input, command, expect, needle, checks;
  std::string base;  // the manifest's directory: inputs are relative to it
};

struct Result {
  bool clean = false;
  std::string problem;  // why not clean
  int exit_code = -1, signal = 0;
  bool timed_out = false;
  double seconds = 0;
  int64_t rss_kib = 0;
  std::string stderr_text, command;
};

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, sep)) out.push_back(item);
  return out;
}

std::vector<Case> read_manifest(const std::string& path) {
  std::vector<Case> cases;
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot read manifest");
  std::string base = fs::path(path).parent_path().string();
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = split(line, '\t');
    if (f.size() < 5) throw std::runtime_error(path + ": malformed line: " + line);
    f.resize(7);
    if (f[5].empty() && f[4] != "0") throw std::runtime_error(path + ": a case that may fail needs a needle: " + line);
    cases.push_back({f[0], f[1], f[2], f[3], f[4], f[5], f[6], base});
  }
  return cases;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}

// Name, size, mtime, inode and type of everything under dir (outputs must not appear or change).
std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    out[it->path().string()] = std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
                               std::to_string(st.st_mtim.tv_nsec) + ":" + std::to_string(st.st_ino) + ":" +
                               std::to_string(st.st_mode);
  }
  return out;
}

std::string stat_signature(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return "absent";
  return std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) +
         ":" + std::to_string(st.st_mode);
}

// CPU ticks (utime + stime) and state of a process from /proc; false when it is gone.
bool proc_stat(pid_t pid, uint64_t& ticks, char& state, int64_t& rss_kib) {
  std::string s = read_text("/proc/" + std::to_string(pid) + "/stat");
  size_t close = s.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream in(s.substr(close + 2));
  std::string field;
  std::vector<std::string> f;
  while (in >> field) f.push_back(field);
  if (f.size() < 22) return false;
  state = f[0][0];
  ticks = std::stoull(f[11]) + std::stoull(f[12]);  // fields 14 and 15 of stat
  rss_kib = std::stoll(f[21]) * (::sysconf(_SC_PAGESIZE) / 1024);
  return true;
}

struct Step {
  std::vector<std::string> env, argv;
};

Step parse_step(const std::string& text, const std::string& tern) {
  Step s;
  std::istringstream in(text);
  bool leading = true;
  for (std::string tok; in >> tok;) {
    if (leading && tok.find('=') != std::string::npos && tok[0] != '-' && tok.find('/') == std::string::npos) {
      s.env.push_back(tok);
      continue;
    }
    leading = false;
    s.argv.push_back(tok);
  }
  s.argv.insert(s.argv.begin(), tern);
  return s;
}

struct Run {
  int exit_code = -1, signal = 0;
  bool timed_out = false, idle = false, rss_killed = false;
  double seconds = 0;
  int64_t rss_kib = 0;
  std::string out, err;
};

// Runs one step in `cwd` with stdout/stderr to files under log_prefix.
Run run_step(const Step& step, const std::string& cwd, const std::string& log_prefix, double timeout_s) {
  std::vector<std::string> env_strings;
  std::set<std::string> set_names;
  for (const std::string& e : step.env) set_names.insert(e.substr(0, e.find('=')));
  for (char** e = environ; *e; ++e) {
    std::string s = *e;
    if (!set_names.count(s.substr(0, s.find('='))) && s.rfind("TERN_MAX_MEMORY=", 0) != 0) env_strings.push_back(s);
  }
  if (!set_names.count("TERN_MAX_MEMORY")) env_strings.push_back("TERN_MAX_MEMORY=1G");
  for (const std::string& e : step.env) env_strings.push_back(e);
  std::vector<char*> envp, argv;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = step.argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::string out_path = log_prefix + ".out", err_path = log_prefix + ".err";

  Run r;
  auto start = std::chrono::steady_clock::now();
  pid_t pid = ::fork();
  if (pid < 0) {
    r.err = "fork failed";
    return r;
  }
  if (pid == 0) {  // only async-signal-safe calls from here to exec
    ::setpgid(0, 0);
    int in = ::open("/dev/null", O_RDONLY);
    int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0 || err < 0 || ::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) ::_exit(126);
    struct rlimit as = {kAddressSpaceLimit, kAddressSpaceLimit}, core = {0, 0};
    if (!kUnderAddressSanitizer) ::setrlimit(RLIMIT_AS, &as);  // ASan's shadow memory needs the address space
    ::setrlimit(RLIMIT_CORE, &core);
    if (::chdir(cwd.c_str()) != 0) ::_exit(126);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  int status = 0;
  struct rusage usage {};
  uint64_t last_ticks = 0;
  auto last_progress = start;
  for (int polls = 0;; ++polls) {
    pid_t done = ::wait4(pid, &status, WNOHANG, &usage);
    if (done == pid) break;
    auto now = std::chrono::steady_clock::now();
    double elapsed = std::chrono::duration<double>(now - start).count();
    uint64_t ticks = 0;
    char state = '?';
    int64_t rss = 0;
    bool alive = proc_stat(pid, ticks, state, rss);
    if (alive && ticks != last_ticks) {
      last_ticks = ticks;
      last_progress = now;
    }
    bool idle = alive && state == 'S' && std::chrono::duration<double>(now - last_progress).count() > kIdleSeconds;
    bool too_big = alive && rss > kRssKillKiB;
    if (elapsed > timeout_s || idle || too_big) {
      r.timed_out = elapsed > timeout_s;
      r.idle = idle && !r.timed_out;
      r.rss_killed = too_big;
      if (too_big) r.rss_kib = rss;
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      ::wait4(pid, &status, 0, &usage);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(polls < 20 ? 5 : 25));
  }
  ::kill(-pid, SIGKILL);  // anything it left behind in its process group
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.rss_kib = std::max<int64_t>(r.rss_kib, usage.ru_maxrss);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  r.out = read_text(out_path);
  r.err = read_text(err_path);
  return r;
}

// On exit 0 with 'nonneg': no count printed negative (a bare negative integer, or a negative JSON
// count field).
bool has_negative_count(const std::string& out) {
  static const std::regex json_count("\"(macs|parameters|multiplies|bytes|size_bytes|fp32_bytes|int8_bytes|"
                                     "stored_bytes|file_bytes)\"\\s*:\\s*-");
  static const std::regex bare("(^|\\s)-[0-9]+(\\s|$)");
  return std::regex_search(out, json_count) || std::regex_search(out, bare);
}

struct Paths {
  std::string tern, data, models, scratch;
};

Result run_case(const Case& c, size_t index, const Paths& p, double timeout_s) {
  Result res;
  std::string work = p.scratch + "/case" + std::to_string(index);
  std::string logs = p.scratch + "/logs/case" + std::to_string(index);
  fs::create_directories(work);
  std::string in;
  if (c.input.rfind("fifo:", 0) == 0) {
    in = c.input.substr(5);
    if (::mkfifo((work + "/" + in).c_str(), 0644) != 0) {
      res.problem = "harness: cannot make the FIFO";
      return res;
    }
  } else if (c.input.rfind("link:", 0) == 0) {
    std::string spec = c.input.substr(5);
    in = spec.substr(0, spec.find('='));
    fs::create_symlink(spec.substr(spec.find('=') + 1), work + "/" + in);
  } else if (c.input != "-") {
    in = c.base + "/" + c.input;
  }
  auto fill = [&](std::string s) {
    s = replace_all(s, "{in}", in);
    s = replace_all(s, "{work}", work);
    s = replace_all(s, "{data}", p.data);
    s = replace_all(s, "{gen}", c.base);  // generated cases: their family's directory
    s = replace_all(s, "{models}", p.models);
    return s;
  };
  std::vector<std::string> steps;
  std::string command = fill(c.command);
  for (size_t at = 0;;) {
    size_t next = command.find(" ;; ", at);
    steps.push_back(command.substr(at, next == std::string::npos ? std::string::npos : next - at));
    if (next == std::string::npos) break;
    at = next + 4;
  }
  std::string needle = fill(c.needle);
  std::set<int> allowed;
  for (const std::string& e : split(c.expect, '|')) allowed.insert(std::stoi(e));

  auto before = snapshot(work);
  bool file_input = c.input != "-" && c.input.rfind("fifo:", 0) != 0 && c.input.rfind("link:", 0) != 0;
  std::string input_before = file_input ? stat_signature(in) : "";
  res.command = "tern " + steps[0];
  Run r = run_step(parse_step(steps[0], p.tern), work, logs, timeout_s);
  res.exit_code = r.exit_code;
  res.signal = r.signal;
  res.timed_out = r.timed_out || r.idle;
  res.seconds = r.seconds;
  res.rss_kib = r.rss_kib;
  res.stderr_text = r.err;

  std::vector<std::string> problems;
  auto rss_problem = [&](const Run& run, const std::string& who) {
    if (run.rss_killed) problems.push_back(who + "killed at RSS " + std::to_string(run.rss_kib >> 10) + " MiB (limit 1024)");
    else if (run.rss_kib > kRssLimitKiB) problems.push_back(who + "peak RSS " + std::to_string(run.rss_kib >> 10) + " MiB (limit 1024)");
  };
  if (r.timed_out) problems.push_back("hang: killed after " + std::to_string(static_cast<int>(timeout_s)) + " s");
  else if (r.idle) problems.push_back("hang: blocked without using CPU for " + std::to_string(static_cast<int>(kIdleSeconds)) + " s");
  else if (r.rss_killed) {
  } else if (r.signal) problems.push_back(std::string("killed by signal ") + std::to_string(r.signal) + " (" + strsignal(r.signal) + ")");
  else if (!allowed.count(r.exit_code)) problems.push_back("exit " + std::to_string(r.exit_code) + ", want " + c.expect);
  rss_problem(r, "");
  for (const char* word : kForbidden)
    if (r.err.find(word) != std::string::npos) problems.push_back(std::string("stderr has '") + word + "'");

  bool failed_run = r.exit_code != 0 || r.signal || r.timed_out || r.idle || r.rss_killed;
  if (failed_run && !r.timed_out && !r.idle && !r.rss_killed && !r.signal) {
    size_t lines = static_cast<size_t>(std::count(r.err.begin(), r.err.end(), '\n'));
    if (lines != 1 || r.err.back() != '\n') problems.push_back(std::to_string(lines) + " stderr lines, want 1");
    if (r.err.rfind("tern: ", 0) != 0) problems.push_back("stderr does not start with 'tern: '");
    if (!needle.empty() && r.err.find(needle) == std::string::npos) problems.push_back("stderr does not name '" + needle + "'");
  }
  if (failed_run) {
    auto after = snapshot(work);
    for (const auto& [path, sig] : after) {
      auto it = before.find(path);
      if (it == before.end()) problems.push_back("left " + fs::path(path).filename().string() + " behind");
      else if (it->second != sig) problems.push_back("modified " + fs::path(path).filename().string());
    }
  }
  if (!input_before.empty() && stat_signature(in) != input_before) problems.push_back("the input file changed");
  if (!failed_run && c.checks.find("nonneg") != std::string::npos && has_negative_count(r.out))
    problems.push_back("exit 0 with a negative count on stdout");
  if (!failed_run) {  // the later steps: what the first wrote must load and run
    for (size_t i = 1; i < steps.size() && problems.empty(); ++i) {
      Run f = run_step(parse_step(steps[i], p.tern), work, logs + "_" + std::to_string(i), timeout_s);
      std::string who = "then 'tern " + steps[i] + "': ";
      if (f.timed_out || f.idle) problems.push_back(who + "hang");
      else if (f.signal) problems.push_back(who + "killed by signal " + std::to_string(f.signal));
      else if (f.exit_code != 0)
        problems.push_back(who + "exit " + std::to_string(f.exit_code) + ": " + f.err.substr(0, f.err.find('\n')));
      rss_problem(f, who);
      if (!problems.empty()) res.stderr_text = f.err;
    }
  }
  res.clean = problems.empty();
  for (const std::string& pr : problems) res.problem += (res.problem.empty() ? "" : "; ") + pr;
  std::error_code ec;
  fs::remove_all(work, ec);
  return res;
}

std::vector<Result> run_cases(const std::vector<Case>& cases, const Paths& p) {
  double timeout_s = std::stod(env_or("HOSTILE_TIMEOUT_S", "60"));
  int jobs = std::max(1, std::stoi(env_or("HOSTILE_JOBS", "2")));
  std::vector<Result> results(cases.size());
  std::atomic<size_t> next{0};
  static std::atomic<size_t> serial{0};  // unique case directories across calls
  size_t first = serial.fetch_add(cases.size());
  std::vector<std::thread> workers;
  for (int j = 0; j < jobs; ++j)
    workers.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < cases.size();) results[i] = run_case(cases[i], first + i, p, timeout_s);
    });
  for (auto& w : workers) w.join();
  return results;
}

std::string one_line(std::string s, size_t max = 240) {
  while (!s.empty() && s.back() == '\n') s.pop_back();
  std::replace(s.begin(), s.end(), '\n', '|');
  if (s.size() > max) s = s.substr(0, max) + "...";
  return s;
}

std::string describe(const Case& c, const Result& r) {
  char head[128];
  std::snprintf(head, sizeof head, "exit %d%s, %.1f s, RSS %lld MiB", r.exit_code,
                r.signal ? (" signal " + std::to_string(r.signal)).c_str() : "", r.seconds,
                static_cast<long long>(r.rss_kib >> 10));
  return c.name + ": " + r.problem + "\n      [" + head + "] " + r.command + "\n      stderr: " +
         (r.stderr_text.empty() ? "(empty)" : one_line(r.stderr_text));
}

// The whole suite's inputs: the committed manifest plus the generated one (made once per process,
// only for the families asked for).
class Suite {
 public:
  static Suite& get() {
    static Suite s;
    return s;
  }
  Paths paths() const { return paths_; }
  std::vector<Case> cases(const std::string& category) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (category.rfind("sys-", 0) == 0 || category == "alloc") generate(category);
    std::vector<Case> out;
    for (const Case& c : committed_)
      if (c.category == category) out.push_back(c);
    for (const Case& c : generated_[category])
      if (c.category == category) out.push_back(c);
    return out;
  }
  ~Suite() {
    std::error_code ec;
    if (env_or("HOSTILE_KEEP", "") != "1") fs::remove_all(root_, ec);
    else std::fprintf(stderr, "kept %s\n", root_.c_str());
  }

 private:
  Suite() {
    root_ = (fs::temp_directory_path() / ("tern_hostile_" + std::to_string(::getpid()))).string();
    fs::remove_all(root_);
    fs::create_directories(root_ + "/scratch/logs");
    gen_ = root_ + "/gen";
    paths_ = {env_or("HOSTILE_TERN", TERN_CLI), TERN_HOSTILE_DATA_DIR, TERN_MODELS_DIR, root_ + "/scratch"};
    committed_ = read_manifest(paths_.data + "/cases.tsv");
  }
  void generate(const std::string& family) {
    if (generated_.count(family)) return;
    std::string dir = gen_ + "/" + family;
    fs::create_directories(dir);
    std::string cmd = std::string("'") + HOSTILE_GENERATOR + "' generated '" + dir + "' '" + paths_.models + "' " + family +
                      " >'" + root_ + "/gen_" + family + ".log' 2>&1";
    if (std::system(cmd.c_str()) != 0)
      throw std::runtime_error("make_hostile_inputs failed: " + read_text(root_ + "/gen_" + family + ".log"));
    generated_[family] = read_manifest(dir + "/cases.tsv");
  }

  std::mutex mutex_;
  std::string root_, gen_;
  Paths paths_;
  std::vector<Case> committed_;
  std::map<std::string, std::vector<Case>> generated_;
};

class HostileInputs : public ::testing::TestWithParam<std::string> {};

TEST_P(HostileInputs, Category) {
  Suite& suite = Suite::get();
  std::vector<Case> cases = suite.cases(GetParam());
  ASSERT_FALSE(cases.empty()) << "no cases for " << GetParam();
  std::vector<Result> results = run_cases(cases, suite.paths());
  size_t clean = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    if (results[i].clean) ++clean;
    else ADD_FAILURE() << describe(cases[i], results[i]);
  }
  std::printf("%s: %zu tried, %zu clean\n", GetParam().c_str(), cases.size(), clean);
}

INSTANTIATE_TEST_SUITE_P(, HostileInputs, ::testing::ValuesIn(kCategories),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// Every category's count and failures, without GoogleTest's output (scripts/hostile_report.sh).
int report(const std::vector<std::string>& wanted) {
  Suite& suite = Suite::get();
  std::vector<std::string> categories = wanted.empty() ? kCategories : wanted;
  size_t tried = 0, clean = 0;
  std::vector<std::string> lines, failures;
  for (const std::string& cat : categories) {
    auto start = std::chrono::steady_clock::now();
    std::vector<Case> cases = suite.cases(cat);
    std::vector<Result> results = run_cases(cases, suite.paths());
    size_t ok = 0;
    for (size_t i = 0; i < cases.size(); ++i) {
      if (results[i].clean) ++ok;
      else failures.push_back("[" + cat + "] " + describe(cases[i], results[i]));
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    char line[160];
    std::snprintf(line, sizeof line, "%-16s %6zu %6zu %8zu %8.0f", cat.c_str(), cases.size(), ok, cases.size() - ok, s);
    lines.push_back(line);
    std::printf("%s\n", line);
    std::fflush(stdout);
    tried += cases.size();
    clean += ok;
  }
  std::printf("\n%-16s %6s %6s %8s %8s\n", "category", "tried", "clean", "failing", "seconds");
  for (const std::string& l : lines) std::printf("%s\n", l.c_str());
  std::printf("%-16s %6zu %6zu %8zu\n", "total", tried, clean, tried - clean);
  if (!failures.empty()) {
    std::printf("\nfailures:\n");
    for (const std::string& f : failures) std::printf("  %s\n", f.c_str());
  }
  return tried == clean ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "--report") {
    try {
      return report(std::vector<std::string>(argv + 2, argv + argc));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "test_hostile_inputs: %s\n", e.what());
      return 2;
    }
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
