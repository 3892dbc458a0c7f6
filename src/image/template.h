// Offline image templates: berth works from its first minute without a
// registry. `busybox` is made from the host's busybox-static binary, `debian`
// with debootstrap.
#pragma once

#include <string>

#include "image/reference.h"
#include "image/store.h"
#include "util/error.h"

namespace berth::image {

struct TemplateOptions {
  std::string busybox = "/bin/busybox";  // a static busybox binary
  std::string suite = "bookworm";        // debian
  std::string mirror;                    // debian: debootstrap's default when empty
};

// The names `berth image create` knows.
bool is_template(std::string_view name);

// Makes the image and tags it `name` ("busybox:latest" unless told otherwise).
// The busybox image is reproducible: the same binary gives the same image ID.
Result<ImageRecord> create_from_template(ImageStore& store, std::string_view template_name, const Reference& name,
                                         const TemplateOptions& o = {});

}  // namespace berth::image
