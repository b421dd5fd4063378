//! doctune's test runner (`zig test --test-runner <this file>`), Zig 0.14.
//!
//! Reports each test's result on a pipe the executor passes as an inherited fd, not on stdout/stderr: every
//! record carries a per-run random nonce that the code under test never sees, and the final `done` record is
//! written only after every selected test returned. A binary that ends before `done` (exit, abort, signal)
//! leaves its last `start` record unanswered: the executor names that test as unfinished.
//!
//! Environment (read once, then blanked in place so tests cannot read it, /proc/self/environ included):
//!   DOCTUNE_REPORT_FD  the pipe's fd number; moved to a random fd number, close-on-exec, before any test runs
//!   DOCTUNE_NONCE      32 hex characters, the run's nonce
//!   DOCTUNE_TESTS      optional: run only tests whose fully qualified name starts with this prefix
//! Records, one write(2) each (atomic on a pipe): "\n<nonce> start <i> <name>\n", "\n<nonce> pass <i>\n",
//! "\n<nonce> skip <i>\n", "\n<nonce> fail <i> <reason>\n", "\n<nonce> done <passed> <failed> <skipped>\n".
//! Human-readable progress and failure traces go to stderr as with Zig's default runner.
const builtin = @import("builtin");
const std = @import("std");
const testing = std.testing;

pub const std_options: std.Options = .{ .logFn = log };

const F_DUPFD_CLOEXEC = 1030; // Linux; std.posix.F lacks it in 0.14
var log_err_count: usize = 0;
var nonce_buf: [32]u8 = undefined;
var nonce: []const u8 = "";
var report_fd: std.posix.fd_t = -1;
var filter_buf: [256]u8 = undefined;
var filter: []const u8 = "";

pub fn main() void {
    if (!setup()) {
        std.debug.print("doctune test runner: DOCTUNE_REPORT_FD/DOCTUNE_NONCE missing or invalid\n", .{});
        std.process.exit(2);
    }
    var passed: usize = 0;
    var failed: usize = 0;
    var skipped: usize = 0;
    for (builtin.test_functions, 0..) |t, i| {
        if (!std.mem.startsWith(u8, t.name, filter)) continue;
        record("start", i, t.name);
        std.debug.print("{d} {s}...", .{ i + 1, t.name });
        testing.allocator_instance = .{};
        testing.log_level = .warn;
        const logged_before = log_err_count;
        const result = t.func();
        const leaked = testing.allocator_instance.deinit() == .leak;
        if (result) |_| {
            if (leaked) {
                failed += 1;
                std.debug.print("FAIL (memory leaked)\n", .{});
                record("fail", i, "leak");
            } else if (log_err_count != logged_before) {
                failed += 1;
                std.debug.print("FAIL (errors were logged)\n", .{});
                record("fail", i, "logged-errors");
            } else {
                passed += 1;
                std.debug.print("OK\n", .{});
                record("pass", i, "");
            }
        } else |err| {
            if (err == error.SkipZigTest) {
                skipped += 1;
                std.debug.print("SKIP\n", .{});
                record("skip", i, "");
            } else {
                failed += 1;
                std.debug.print("FAIL ({s})\n", .{@errorName(err)});
                if (@errorReturnTrace()) |trace| std.debug.dumpStackTrace(trace.*);
                record("fail", i, @errorName(err));
            }
        }
    }
    std.debug.print("{d} passed; {d} skipped; {d} failed.\n", .{ passed, skipped, failed });
    var buf: [160]u8 = undefined;
    const line = std.fmt.bufPrint(&buf, "\n{s} done {d} {d} {d}\n", .{ nonce, passed, failed, skipped }) catch unreachable;
    writeAll(line);
    std.process.exit(if (failed == 0) 0 else 1);
}

/// Reads the environment, moves the report fd to a random number and blanks the variables.
fn setup() bool {
    const fd_text = std.posix.getenv("DOCTUNE_REPORT_FD") orelse return false;
    const given = std.fmt.parseInt(std.posix.fd_t, fd_text, 10) catch return false;
    const n = std.posix.getenv("DOCTUNE_NONCE") orelse return false;
    if (n.len != nonce_buf.len) return false;
    @memcpy(&nonce_buf, n);
    nonce = &nonce_buf;
    if (std.posix.getenv("DOCTUNE_TESTS")) |f| {
        if (f.len > filter_buf.len) return false;
        @memcpy(filter_buf[0..f.len], f);
        filter = filter_buf[0..f.len];
    }
    // Below the open-files limit (F_DUPFD fails above it), away from the low numbers code opens first.
    const lim = std.posix.getrlimit(.NOFILE) catch return false;
    const top: usize = @intCast(@min(lim.cur, 1024));
    if (top > 16) {
        const low = std.crypto.random.intRangeAtMost(usize, top / 2, top - 1);
        const moved = std.posix.fcntl(given, F_DUPFD_CLOEXEC, low) catch std.posix.fcntl(given, F_DUPFD_CLOEXEC, 3) catch return false;
        report_fd = @intCast(moved);
        std.posix.close(given);
    } else {
        report_fd = given;
    }
    for (std.os.environ) |entry| {
        const kv = std.mem.span(entry);
        if (std.mem.startsWith(u8, kv, "DOCTUNE_")) @memset(kv, 0);
    }
    return true;
}

fn record(kind: []const u8, index: usize, text: []const u8) void {
    var buf: [1024]u8 = undefined;
    var clean: [512]u8 = undefined;
    const n = @min(text.len, clean.len);
    for (text[0..n], 0..) |c, k| clean[k] = if (c < 0x20 or c == 0x7f) '?' else c;
    const line = std.fmt.bufPrint(&buf, "\n{s} {s} {d} {s}\n", .{ nonce, kind, index, clean[0..n] }) catch return;
    writeAll(line);
}

fn writeAll(bytes: []const u8) void {
    var off: usize = 0;
    while (off < bytes.len) {
        off += std.posix.write(report_fd, bytes[off..]) catch return;
    }
}

pub fn log(
    comptime message_level: std.log.Level,
    comptime scope: @Type(.enum_literal),
    comptime format: []const u8,
    args: anytype,
) void {
    if (@intFromEnum(message_level) <= @intFromEnum(std.log.Level.err)) {
        log_err_count +|= 1;
    }
    if (@intFromEnum(message_level) <= @intFromEnum(testing.log_level)) {
        std.debug.print("[" ++ @tagName(scope) ++ "] (" ++ @tagName(message_level) ++ "): " ++ format ++ "\n", args);
    }
}

/// `std.testing.fuzz` calls `@import("root").fuzz`: without a fuzzer, run the corpus and an empty input once.
pub fn fuzz(
    context: anytype,
    comptime testOne: fn (context: @TypeOf(context), []const u8) anyerror!void,
    options: testing.FuzzInputOptions,
) anyerror!void {
    for (options.corpus) |input| try testOne(context, input);
    try testOne(context, "");
}
