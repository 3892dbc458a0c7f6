// What the static `berth` has in place of the libraries only berth-full links
// (src/CMakeLists.txt): ISA-L's gzip (libisal), POSIX ACLs (libacl, which
// libarchive's disk reader and writer call), libcurl (loaded at run time,
// which a static binary cannot do safely), and liblzma (libarchive's xz
// reader calls it; its CRC code probes the CPU from a constructor at every
// start, ~20 us of CPUIDs under this VM's hypervisor). berth execs berth-full for every
// verb that needs them (main.cc, full_only()), so none of these is ever
// called; if one is, it fails the way its library reports errors, saying so,
// and the command ends with that error instead of doing half its work.
#include <errno.h>
#include <isa-l/igzip_lib.h>
#include <lzma.h>

#include <cstdio>

namespace {

void missing(const char* fn) {
  std::fprintf(stderr, "berth: internal error: %s is in berth-full only; this command should have run there\n", fn);
  errno = ENOTSUP;
}

}  // namespace

// Read by image/curl_loader.cc (a weak reference): this binary never loads libcurl.
extern "C" const bool berth_without_libcurl = true;

extern "C" {

void isal_inflate_init(struct inflate_state*) { missing("isal_inflate_init"); }
int isal_inflate(struct inflate_state*) {
  missing("isal_inflate");
  return ISAL_INVALID_BLOCK;
}
void isal_deflate_init(struct isal_zstream*) { missing("isal_deflate_init"); }
int isal_deflate(struct isal_zstream*) {
  missing("isal_deflate");
  return INVALID_FLUSH;
}

// libacl's (sys/acl.h): pointers to opaque types and int results; -1 or
// NULL with errno set is how each reports failure.
#define BERTH_ACL_INT(name) \
  int name(...) {           \
    missing(#name);         \
    return -1;              \
  }
#define BERTH_ACL_PTR(name) \
  void* name(...) {         \
    missing(#name);         \
    return nullptr;         \
  }
BERTH_ACL_INT(acl_add_perm)
BERTH_ACL_INT(acl_clear_perms)
BERTH_ACL_INT(acl_create_entry)
BERTH_ACL_INT(acl_free)
BERTH_ACL_INT(acl_get_entry)
BERTH_ACL_PTR(acl_get_fd)
BERTH_ACL_PTR(acl_get_file)
BERTH_ACL_INT(acl_get_perm)
BERTH_ACL_INT(acl_get_permset)
BERTH_ACL_PTR(acl_get_qualifier)
BERTH_ACL_INT(acl_get_tag_type)
BERTH_ACL_PTR(acl_init)
BERTH_ACL_INT(acl_set_fd)
BERTH_ACL_INT(acl_set_file)
BERTH_ACL_INT(acl_set_qualifier)
BERTH_ACL_INT(acl_set_tag_type)

// liblzma's (lzma.h), for libarchive's xz reader: every call fails as a
// decoder that cannot be set up does.
lzma_ret lzma_stream_decoder(lzma_stream*, uint64_t, uint32_t) {
  missing("lzma_stream_decoder");
  return LZMA_PROG_ERROR;
}
lzma_ret lzma_alone_decoder(lzma_stream*, uint64_t) {
  missing("lzma_alone_decoder");
  return LZMA_PROG_ERROR;
}
lzma_ret lzma_raw_decoder(lzma_stream*, const lzma_filter*) {
  missing("lzma_raw_decoder");
  return LZMA_PROG_ERROR;
}
lzma_ret lzma_properties_decode(lzma_filter*, const lzma_allocator*, const uint8_t*, size_t) {
  missing("lzma_properties_decode");
  return LZMA_PROG_ERROR;
}
lzma_ret lzma_code(lzma_stream*, lzma_action) {
  missing("lzma_code");
  return LZMA_PROG_ERROR;
}
void lzma_end(lzma_stream*) {}
uint32_t lzma_crc32(const uint8_t*, size_t, uint32_t crc) {
  missing("lzma_crc32");
  return crc;
}

}  // extern "C"
