//go:build ignore

// SPDX-License-Identifier: GPL-2.0
//
// What live tasks hold: BPF iterators over every task, its open files and
// its memory mappings write the addresses of the kernel objects each holds
// (struct held, in holders.h), for user space to find in the live table. A
// call site whose objects are live tasks' own structures grows because
// processes start, not because the kernel leaks; one whose objects are a
// task's open files is named by who holds them.
//
// The iterators run when user space reads them, never on an allocation:
// they cost the hot path nothing.

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "holders.h"

char LICENSE[] SEC("license") = "GPL";

// S_IFMT and S_IFSOCK of include/uapi/linux/stat.h.
#define MODE_TYPE 0170000
#define MODE_SOCKET 0140000
#define MODE_FIFO 0010000

// PF_KTHREAD of include/linux/sched.h.
#define TASK_IS_KTHREAD 0x00200000

// Linked anon_vma_chain entries read per mapping: a mapping has one per
// anon_vma it shares (one, or a few after forks).
#define CHAINS_PER_VMA 4

static __always_inline void emit(struct seq_file *seq, const void *addr, __u32 tgid, enum held_kind kind)
{
	if (!addr)
		return;
	struct held h = { .addr = (__u64)addr, .tgid = tgid, .kind = kind };
	bpf_seq_write(seq, &h, sizeof(h));
}

// A process's start and name, once per thread group, for user space to say
// which processes hold what.
static __always_inline void emit_process(struct seq_file *seq, struct task_struct *t)
{
	struct held_process p = {
		.head = { .addr = 0, .tgid = t->tgid, .kind = HELD_PROCESS },
		.start_time = t->start_time,
	};
	bpf_probe_read_kernel_str(p.comm, sizeof(p.comm), t->comm);
	bpf_seq_write(seq, &p, sizeof(p));
}

// Every task's own structures: what fork and exec allocate for it and what
// goes when it is reaped.
SEC("iter/task")
int held_by_tasks(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *t = ctx->task;
	if (!t)
		return 0;
	__u32 tgid = t->tgid;
	if (t->pid == tgid)
		emit_process(seq, t);
	emit(seq, t, tgid, HELD_BY_TASK);
	emit(seq, t->thread_pid, tgid, HELD_BY_TASK);
	emit(seq, t->signal, tgid, HELD_BY_TASK);
	emit(seq, t->sighand, tgid, HELD_BY_TASK);
	emit(seq, t->mm, tgid, HELD_BY_TASK);
	emit(seq, t->fs, tgid, HELD_BY_TASK);
	emit(seq, t->cred, tgid, HELD_BY_TASK);
	emit(seq, t->real_cred, tgid, HELD_BY_TASK);
	if (bpf_core_field_exists(t->cred->security)) {
		emit(seq, BPF_CORE_READ(t, cred, security), tgid, HELD_BY_TASK);
		emit(seq, BPF_CORE_READ(t, real_cred, security), tgid, HELD_BY_TASK);
	}
	if (bpf_core_field_exists(t->security))
		emit(seq, BPF_CORE_READ(t, security), tgid, HELD_BY_TASK);
	if (bpf_core_field_exists(t->delays))
		emit(seq, BPF_CORE_READ(t, delays), tgid, HELD_BY_TASK);
	// A vmalloc'ed stack's area (CONFIG_VMAP_STACK) and its array of
	// pages.
	if (bpf_core_field_exists(t->stack_vm_area)) {
		struct vm_struct *area = BPF_CORE_READ(t, stack_vm_area);
		emit(seq, area, tgid, HELD_BY_TASK);
		emit(seq, BPF_CORE_READ(area, pages), tgid, HELD_BY_TASK);
	}
	// A kernel thread's struct kthread, its name, and what the thread
	// works on (a workqueue worker's struct worker).
	if (bpf_core_field_exists(t->worker_private) && (t->flags & TASK_IS_KTHREAD)) {
		struct kthread *k = BPF_CORE_READ(t, worker_private);
		emit(seq, k, tgid, HELD_BY_TASK);
		emit(seq, BPF_CORE_READ(k, data), tgid, HELD_BY_TASK);
		if (bpf_core_field_exists(k->full_name))
			emit(seq, BPF_CORE_READ(k, full_name), tgid, HELD_BY_TASK);
	}
	struct files_struct *files = t->files;
	if (files) {
		emit(seq, files, tgid, HELD_BY_TASK);
		struct fdtable *fdt = BPF_CORE_READ(files, fdt);
		emit(seq, fdt, tgid, HELD_BY_TASK);
		emit(seq, BPF_CORE_READ(fdt, fd), tgid, HELD_BY_TASK);
		emit(seq, BPF_CORE_READ(fdt, open_fds), tgid, HELD_BY_TASK);
	}
	return 0;
}

#define IPPROTO_TCP 6

// emit_sock emits a socket's sock and, for TCP, the buckets of the port it
// is bound to (shared by the sockets bound to it, made by the first): a
// service's listening socket holds its port. An MPTCP socket's (Go's
// listeners are, by default) belong to its subflow, which is not read.
static __always_inline void emit_sock(struct seq_file *seq, struct sock *sk, __u32 tgid)
{
	if (!sk)
		return;
	emit(seq, sk, tgid, HELD_AS_FILE);
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return;
	struct inet_connection_sock *icsk = (void *)sk;
	emit(seq, BPF_CORE_READ(icsk, icsk_bind_hash), tgid, HELD_AS_FILE);
	if (bpf_core_field_exists(icsk->icsk_bind2_hash))
		emit(seq, BPF_CORE_READ(icsk, icsk_bind2_hash), tgid, HELD_AS_FILE);
}

// Every open file of every task, and what the file holds: a pipe's
// buffers, an eventfd's context, a socket and its sock, its security blob.
SEC("iter/task_file")
int held_as_files(struct bpf_iter__task_file *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *t = ctx->task;
	struct file *f = ctx->file;
	if (!t || !f)
		return 0;
	__u32 tgid = t->tgid;
	void *private = f->private_data;
	emit(seq, f, tgid, HELD_AS_FILE);
	emit(seq, private, tgid, HELD_AS_FILE);
	emit(seq, f->f_path.dentry, tgid, HELD_AS_FILE);
	// The credentials it was opened with: a task's, shared by every file
	// it opens, made when the task forked or exec'd; with the task's own.
	const struct cred *cred = f->f_cred;
	emit(seq, cred, tgid, HELD_BY_TASK);
	if (bpf_core_field_exists(cred->security))
		emit(seq, BPF_CORE_READ(cred, security), tgid, HELD_BY_TASK);
	if (bpf_core_field_exists(f->f_security))
		emit(seq, BPF_CORE_READ(f, f_security), tgid, HELD_AS_FILE);
	struct inode *inode = f->f_inode;
	emit(seq, inode, tgid, HELD_AS_FILE);
	if (!inode || !private)
		return 0;
	__u16 type = BPF_CORE_READ(inode, i_mode) & MODE_TYPE;
	if (type == MODE_SOCKET)
		emit_sock(seq, BPF_CORE_READ((struct socket *)private, sk), tgid);
	else if (type == MODE_FIFO) // a pipe's ring of buffers, besides the pipe
		emit(seq, BPF_CORE_READ((struct pipe_inode_info *)private, bufs), tgid, HELD_AS_FILE);
	return 0;
}

// Every mapping of every process, its anon_vma and the chain entries that
// link them, its file and the credentials that file was opened with.
SEC("iter/task_vma")
int held_by_mappings(struct bpf_iter__task_vma *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *t = ctx->task;
	struct vm_area_struct *vma = ctx->vma;
	if (!t || !vma)
		return 0;
	__u32 tgid = t->tgid;
	emit(seq, vma, tgid, HELD_BY_TASK);
	emit(seq, vma->anon_vma, tgid, HELD_BY_TASK);
	struct file *file = vma->vm_file;
	emit(seq, file, tgid, HELD_BY_TASK);
	if (file) {
		// The credentials an executable was opened with by exec: the
		// process's before exec replaced them, held as long as the mapping.
		const struct cred *cred = BPF_CORE_READ(file, f_cred);
		emit(seq, cred, tgid, HELD_BY_TASK);
		if (bpf_core_field_exists(cred->security))
			emit(seq, BPF_CORE_READ(cred, security), tgid, HELD_BY_TASK);
	}
	struct list_head *head = &vma->anon_vma_chain;
	struct list_head *pos = BPF_CORE_READ(head, next);
	for (int i = 0; i < CHAINS_PER_VMA && pos && pos != head; i++) {
		struct anon_vma_chain *avc = container_of(pos, struct anon_vma_chain, same_vma);
		emit(seq, avc, tgid, HELD_BY_TASK);
		pos = BPF_CORE_READ(avc, same_vma.next);
	}
	return 0;
}
