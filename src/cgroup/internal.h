// What the cgroupfs v1 and v2 managers share; not part of libberth's interface.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "cgroup/cgroup.h"
#include "oci/spec.h"
#include "util/error.h"

namespace berth::cgroup::detail {

std::string trim(std::string s);

std::unique_ptr<Manager> make_v1(const Layout& layout, const std::string& path);
std::unique_ptr<Manager> make_v2(const std::string& root, const std::string& path);

// Every pid in `dir`'s cgroup.procs and in the cgroups beneath it (a container
// may make its own sub-cgroups).
Result<std::vector<pid_t>> pids_recursive(const std::string& dir);

// Removes `dir` and every cgroup beneath it, deepest first.
Result<> rmdir_tree(const std::string& dir);

// The levels of `path` that do not exist yet under `root`, outermost first.
std::vector<std::string> missing_levels(const std::string& root, const std::string& path);
void remove_levels(const std::vector<std::string>& made);

// Polls `file` until it reads `value` (or, keyed, has a line `value`), for up
// to `timeout_ms`.
Result<> wait_until(const std::string& file, const std::string& value, bool keyed, int timeout_ms = 5000);

// A CPU or memory-node list ("0-3,6") as a set of numbers; an error for a
// malformed list.
Result<std::vector<unsigned>> parse_list(const std::string& list);
// Fails unless every member of `want` (the value of `field`) is in the list in
// `allowed_file` (the parent's effective CPUs or nodes).
Result<> check_subset(const std::string& field, const std::string& want, const std::string& allowed_file);

// Validated hugepage size for a limit ("2MB"), naming the field on error.
Result<std::string> hugepage_size(const oci::HugepageLimit& l, size_t index);

// Writes control files and remembers what each held before, so that a failed
// apply puts every file it changed back: an impossible update leaves the
// cgroup as it was. Rollback runs in reverse order from the destructor unless
// commit() was called.
class Journal {
 public:
  // `record` false: no reading of old values (a create, which removes the
  // whole cgroup on error, has nothing to put back; it saves a read per file).
  explicit Journal(bool record = true) : record_(record) {}
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;
  ~Journal() {
    if (!committed_) rollback();
  }

  // Writes `value` to `file`; on error the line names `field` and `value`.
  Result<> write(const std::string& file, const std::string& value, const std::string& field);
  // As write, where what the file reads back can't be written back as is:
  // `restore` is what undoes this write.
  Result<> write_undo(const std::string& file, const std::string& value, const std::string& field,
                      std::string restore);
  // Per-device (or per-name) lines such as "8:0 1048576": writes "key value";
  // the undo is the file's old line for `key`, or "key none" where it had none.
  Result<> write_line(const std::string& file, const std::string& key, const std::string& value,
                      const std::string& field, const std::string& none);
  void commit() { committed_ = true; }
  void rollback();

 private:
  std::vector<std::pair<std::string, std::string>> undo_;
  bool record_ = true;
  bool committed_ = false;
};

// "c 1:3 rwm" for devices.allow/deny; "a" for the all-devices rule.
std::string device_rule(const oci::DeviceCgroupRule& r);
// Checks a rule's type and access letters, naming it by index.
Result<> check_device_rule(const oci::DeviceCgroupRule& r, size_t index);

// The limits of an rdma.max line ("hca_handle=2 hca_object=2000"; an absent
// limit is left out, so it keeps its value), for Journal::write_line with the
// device as key.
std::string rdma_limits(const std::pair<std::optional<uint32_t>, std::optional<uint32_t>>& lim);

// The value of `key` in a "key value" per-line file (memory.events,
// memory.oom_control); 0 when absent.
uint64_t keyed_value(const std::string& text, const std::string& key);

}  // namespace berth::cgroup::detail
