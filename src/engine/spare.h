// Spare container directories: what Engine::create makes before a rootfs is
// mounted (the directory, upper/, work/, rootfs/, and its four small files,
// empty), made ahead of the next create and off every command's path.
//
// Each of those is a new inode, and on an ext4 like this VM's (no journal,
// online discard, thousands of recently freed inodes to step over) a new
// inode cost 60-120 us: eight of them sat on every `run`'s path before its
// container could start. A monitor that removes a `run --rm` container's
// files (kRemoveTrash) first makes a spare in containers/, where the next
// create renames it to its own name instead of making the directory, and
// writes into the empty files.
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

#include <string>
#include <string_view>

#include "util/error.h"

namespace berth::engine {

inline constexpr int kSpareSlots = 2;
// Where spares are made, in containers/ (spare.cc says why not in it);
// what a maker that died left there is trash (Engine::repair).
inline constexpr const char* kSpareNursery = ".spare-nursery";

// Makes one spare in `containers` (the store's containers/) if a slot is
// free; nothing if they are all taken.
Result<> make_spare(const std::string& containers);

// Renames a spare of `containers` to `to` (a new path in it): false if there
// was none.
bool claim_spare(const std::string& containers, const std::string& to);

// Writes `data` to `path`, a file of a container directory being made and
// seen by no other process: into a spare's empty file, or a new one (as
// write_new_file, no symlink followed).
Result<> write_container_file(const std::string& path, std::string_view data, mode_t mode);

}  // namespace berth::engine
