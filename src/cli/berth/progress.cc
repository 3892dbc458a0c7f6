#include "cli/berth/progress.h"

#include <unistd.h>

#include "cli/berth/format.h"

namespace berth::cli {

LayerProgress::LayerProgress(std::FILE* out) : out_(out), tty_(::isatty(::fileno(out)) == 1) {}

void LayerProgress::draw(size_t i) {
  // Up to the layer's line, rewrite it, back down below the last line.
  size_t up = lines_.size() - i;
  std::fprintf(out_, "\x1b[%zuA\r\x1b[2K%s\r\x1b[%zuB", up, lines_[i].text.c_str(), up);
  std::fflush(out_);
}

void LayerProgress::operator()(const image::TransferEvent& e) {
  std::lock_guard g(mu_);
  std::string id = e.blob.hex.substr(0, 12);
  size_t i = 0;
  while (i < lines_.size() && lines_[i].id != id) ++i;
  bool fresh = i == lines_.size();
  if (fresh) lines_.push_back({id, "", ""});
  Line& l = lines_[i];
  bool changed = l.status != e.status;
  l.status = std::string(e.status);
  l.text = id + ": " + l.status;
  if (e.total > 0 && (e.status == "Downloading" || e.status == "Pushing")) {
    constexpr int kWidth = 50;
    int filled = static_cast<int>(kWidth * std::min(e.done, e.total) / e.total);
    std::string bar(kWidth, ' ');
    for (int k = 0; k < filled; ++k) bar[k] = '=';
    if (filled < kWidth) bar[filled] = '>';
    l.text += " [" + bar + "]  " + human_size(double(e.done)) + "/" + human_size(double(e.total));
  }
  if (!tty_) {
    if (changed) std::fprintf(out_, "%s: %s\n", id.c_str(), l.status.c_str());
    return;
  }
  if (fresh) {
    std::fprintf(out_, "%s\n", l.text.c_str());
    std::fflush(out_);
    return;
  }
  draw(i);
}

}  // namespace berth::cli
