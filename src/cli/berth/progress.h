// Per-layer progress as docker pull/push print it: on a terminal one line per
// layer, redrawn in place with a bar ("Downloading [=====>    ] 1.2MB/3.4MB");
// otherwise one plain line each time a layer's status changes. Thread-safe.
#pragma once

#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "image/pull.h"

namespace berth::cli {

class LayerProgress {
 public:
  explicit LayerProgress(std::FILE* out);
  void operator()(const image::TransferEvent& e);

 private:
  struct Line {
    std::string id, status, text;
  };
  void draw(size_t i);
  std::FILE* out_;
  bool tty_;
  std::mutex mu_;
  std::vector<Line> lines_;
};

}  // namespace berth::cli
