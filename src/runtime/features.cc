// `berth-runtime features`: what this build really supports, in the shape of the
// runtime-spec's features.md, so callers (containerd, CRI-O) can probe us.
#include <nlohmann/json.hpp>

#include "oci/spec.h"
#include "runtime/container.h"
#include "runtime/seccomp.h"

namespace berth::runtime {

std::string features_json() {
  using json = nlohmann::ordered_json;
  json mount_opts = json::array();
  for (const char* o : {"async",    "atime",       "bind",        "defaults",     "dev",         "diratime",
                        "dirsync",  "exec",        "idmap",       "iversion",     "lazytime",    "loud",
                        "mand",     "noatime",     "nodev",       "nodiratime",   "noexec",      "noiversion",
                        "nolazytime", "nomand",    "norelatime",  "nostrictatime", "nosuid",     "nosymfollow",
                        "private",  "ratime",      "rbind",       "rdev",         "rdiratime",   "relatime",
                        "remount",  "rexec",       "ridmap",      "rnoatime",     "rnodev",      "rnodiratime",
                        "rnoexec",  "rnorelatime", "rnostrictatime", "rnosuid",   "rnosymfollow", "ro",
                        "rprivate", "rrelatime",   "rro",         "rrw",          "rshared",     "rslave",
                        "rstrictatime", "rsuid",   "rsymfollow",  "runbindable",  "rw",          "shared",
                        "silent",   "slave",       "strictatime", "suid",         "symfollow",   "sync",
                        "tmpcopyup", "unbindable"})
    mount_opts.push_back(o);
  json j;
  j["ociVersionMin"] = "1.0.0";
  j["ociVersionMax"] = oci::kSpecVersion;
  j["hooks"] = {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"};
  j["mountOptions"] = mount_opts;
  json linux;
  linux["namespaces"] = {"cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"};
  linux["capabilities"] = oci::known_capabilities();
  linux["cgroup"] = {{"v1", true}, {"v2", true}, {"systemd", true}, {"systemdUser", false}, {"rdma", true}};
  auto flags = seccomp::known_flags();
  linux["seccomp"] = {{"enabled", true},
                      {"actions", seccomp::known_actions()},
                      {"operators", seccomp::known_operators()},
                      {"archs", seccomp::known_archs()},
                      {"knownFlags", flags},
                      {"supportedFlags", flags}};
  linux["apparmor"] = {{"enabled", false}};
  linux["selinux"] = {{"enabled", false}};
  linux["intelRdt"] = {{"enabled", false}};
  linux["mountExtensions"] = {{"idmap", {{"enabled", true}}}};
  linux["netDevices"] = {{"enabled", true}};
  j["linux"] = linux;
  j["annotations"] = {{"org.opencontainers.runtime-spec.features.version", oci::kSpecVersion}};
  return j.dump(4);
}

}  // namespace berth::runtime
