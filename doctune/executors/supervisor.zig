//! doctune's in-sandbox supervisor: `supervisor <status-fd> <program> [args...]`.
//!
//! bubblewrap reports a child killed by signal n as exit code 128+n, the same as a program that exits with
//! 128+n. This tiny process runs inside the sandbox (as root there when doctune runs as root, so the untrusted
//! program, under another uid, cannot signal or impersonate it), forks the program and writes its real wait
//! status to <status-fd> ("exit N" or "signal N"); the fd is close-on-exec, so the program never holds it.
const std = @import("std");
const posix = std.posix;

pub fn main() u8 {
    const argv = std.os.argv;
    if (argv.len < 3) return 125;
    const fd = std.fmt.parseInt(posix.fd_t, std.mem.span(argv[1]), 10) catch return 125;
    _ = posix.fcntl(fd, posix.F.SETFD, posix.FD_CLOEXEC) catch return 125;
    const pid = posix.fork() catch return 125;
    if (pid == 0) {
        const args: [*:null]const ?[*:0]const u8 = @ptrCast(argv.ptr + 2);
        const envp: [*:null]const ?[*:0]const u8 = @ptrCast(std.os.environ.ptr);
        const err = posix.execveZ(argv[2], args, envp);
        std.debug.print("doctune supervisor: cannot exec the program: {s}\n", .{@errorName(err)});
        posix.exit(126);
    }
    const res = posix.waitpid(pid, 0);
    var buf: [64]u8 = undefined;
    const st = res.status;
    const line = if (posix.W.IFSIGNALED(st))
        std.fmt.bufPrint(&buf, "signal {d}\n", .{posix.W.TERMSIG(st)}) catch unreachable
    else
        std.fmt.bufPrint(&buf, "exit {d}\n", .{posix.W.EXITSTATUS(st)}) catch unreachable;
    _ = posix.write(fd, line) catch {};
    if (posix.W.IFSIGNALED(st)) return @intCast(128 + (posix.W.TERMSIG(st) & 0x7f));
    return posix.W.EXITSTATUS(st);
}
