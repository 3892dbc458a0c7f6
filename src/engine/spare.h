// Spare container directories: what Engine::create makes before a rootfs is
// mounted (the directory, upper/, work/, rootfs/, and its four small files),
// made ahead of the next create and off every command's path, or recycled
// from a `run --rm` container's (recycle_as_spare).
//
// Each of those is a new inode, and on an ext4 like this VM's (no journal,
// online discard, thousands of recently freed inodes to step over) a new
// inode cost 60-120 us: eight of them sat on every `run`'s path before its
// container could start. A monitor that removes a `run --rm` container's
// files (kRemoveTrash) leaves a spare in containers/ (that container's own
// directory when nothing of it is left in it, else a new one), where the
// next create renames it to its own name instead of making the directory,
// and writes over its files.
//
// A spare is made under a trash name in containers/.spare-nursery (removed by
// Engine::repair if its maker dies) and published complete by a rename to
// one of kSpareSlots fixed names in containers/
// (.spare-0 ...), so a create finds one without listing the directory; it is
// claimed by renaming it to the create's own name, which one create only can
// do. Nothing else writes there: containers/ is 0700, and a spare is mounted
// nowhere until its create mounts its rootfs.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

#include "util/error.h"
#include "util/fd.h"

namespace berth::engine {

inline constexpr int kSpareSlots = 2;
// Where spares are made, in containers/ (spare.cc says why not in it);
// what a maker that died left there is trash (Engine::repair).
inline constexpr const char* kSpareNursery = ".spare-nursery";

// Makes one spare in `containers` (the store's containers/) if a slot is
// free (`if_none`: if every slot is); nothing if they are all taken.
Result<> make_spare(const std::string& containers, bool if_none = false);

// Turns `trash`, the directory of a container that ran and is gone (a
// `run --rm`'s, renamed to trash in `containers`, its processes all ended),
// into a spare: its rootfs unmounted, work/ emptied of the overlay's own, a
// new upper/ (the old one only if empty), and its other inodes kept if they
// are as create made them; the files the container saw only if no one holds
// them open for writing (else new ones). Their old contents are written over
// by the next create. False if it is not that (the caller removes it,
// whatever was done to it) or every slot is taken. `own_pid_ns`: the
// container's first process had a pid namespace of its own, so that every
// process of it ended with it (Launched::own_pid_ns, as its monitor knows it;
// without it the config.json in `trash` is read for it).
bool recycle_as_spare(const std::string& containers, const std::string& trash,
                      std::optional<bool> own_pid_ns = std::nullopt);

// Renames a spare of `containers` to `to` (a new path in it): false if there
// was none.
bool claim_spare(const std::string& containers, const std::string& to);

// Spare network namespaces: made while a container runs (the monitor's
// spare-making thread), for the next `run`'s early monitor to take instead
// of making one on its path (0.6-0.7 ms here, the early monitor's slowest
// step). Each is fresh, made for one container and never used by another:
// kept by a bind mount on <runroot>/netns/spare-<n> (kSpareSlots of them)
// beside a mark, spare-<n>.ready; taken by removing the mark and opening it,
// under <runroot>/netns/.lock so that no two monitors take the same one. A
// taken one's mount goes at the next maker's visit (an unmount waits for an
// RCU grace period). Nothing else mounts there.
inline constexpr const char* kSpareNetnsDir = "netns";

// Makes one spare network namespace under `dir` (<runroot>/netns) if a slot
// is free. Safe on a thread of a multi-threaded process (only the calling
// thread enters the new namespace, and leaves it).
Result<> make_spare_netns(const std::string& dir);

// Takes a spare of `dir`: the namespace's fd (its slot in `slot`), or an
// empty one if there was none.
UniqueFd claim_spare_netns(const std::string& dir, int* slot);

// A taker that started no container gives its spare back: ready again if
// `unused` (no process of a container was made, so nothing entered it),
// else its mount goes at once.
void release_spare_netns(const std::string& dir, int slot, bool unused);

// Writes `data` to `path`, a file of a container directory being made and
// seen by no other process: over a spare's file (empty, or a recycled
// one's old contents, cut to the new length), or into a new one (as
// write_new_file, no symlink followed).
Result<> write_container_file(const std::string& path, std::string_view data, mode_t mode);

}  // namespace berth::engine
