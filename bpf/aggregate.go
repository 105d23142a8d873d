package bpf

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror" -target amd64 -tags linux -type group_key -type group Aggregate aggregate.bpf.c
