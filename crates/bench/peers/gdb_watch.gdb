# gdb peer for `hwbreak-bench`: a hardware write watchpoint on `counter` that
# auto-continues on every hit, the way a user would watch in gdb without
# stopping by hand.  Run as:
#   gdb -nx -batch -x gdb_watch.gdb --args ./target N
# The hit count is read from `info watchpoints` after the program exits
# ("breakpoint already hit N times").
set pagination off
set confirm off
set print thread-events off
set can-use-hw-watchpoints 1
watch -location counter
commands
silent
continue
end
run
info watchpoints
