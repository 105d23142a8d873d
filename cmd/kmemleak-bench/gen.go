package main

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I../../bpf" -target amd64,arm64 -tags linux bench bench.bpf.c
