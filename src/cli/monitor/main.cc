// berth-monitor: see engine/monitor.h.
#include "engine/monitor.h"

int main(int argc, char** argv) { return berth::engine::monitor_main(argc, argv); }
