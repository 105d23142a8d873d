// SPDX-License-Identifier: GPL-2.0
//
// The records the holder iterators (holders.bpf.c) write and user space
// reads, taken by the Go side from bpf2go (-type).

#ifndef HOLDERS_H
#define HOLDERS_H

enum held_kind {
	// A live task's own structure: its task_struct, pid, signal and
	// sighand, mm, mappings, credentials, file table.
	HELD_BY_TASK = 1,
	// An open file of a live task, or what the file holds.
	HELD_AS_FILE = 2,
	// Not an object: a process's start and name (struct held_process).
	HELD_PROCESS = 3,
};

// One kernel object a live task holds.
struct held {
	__u64 addr;
	__u32 tgid;
	__u32 kind; // enum held_kind
};

// A thread group, once: struct held's kind says so, and its addr is 0.
struct held_process {
	struct held head;
	__u64 start_time; // CLOCK_MONOTONIC
	char comm[16];
};

// Puts the types into the object's BTF, where bpf2go finds them.
struct held_types {
	enum held_kind kind;
	struct held held;
	struct held_process process;
};
const struct held_types *unused_held_types __attribute__((unused));

#endif
