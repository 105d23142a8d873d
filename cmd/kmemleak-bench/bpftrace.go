//go:build linux && (amd64 || arm64)

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// bpftraceScript is what our probes do, in bpftrace: insert on alloc,
// keyed by address, with the time and call site; delete on free. The kstack
// variant also keeps the stack. BEGIN runs once every probe is attached.
// END clears the map so that bpftrace does not print a million entries.
func bpftraceScript(kstack bool) string {
	value := "(nsecs, args->call_site)"
	if kstack {
		value = "(nsecs, args->call_site, kstack)"
	}
	return `BEGIN { printf("ready\n"); }
tracepoint:kmem:kmem_cache_alloc, tracepoint:kmem:kmalloc { @live[args->ptr] = ` + value + `; }
tracepoint:kmem:kmem_cache_free, tracepoint:kmem:kfree { delete(@live[args->ptr]); }
END { clear(@live); }
`
}

// bpftraceProbe is a running bpftrace.
type bpftraceProbe struct {
	cmd *exec.Cmd
}

// startBpftrace runs the script and returns once its probes are attached.
// Its map holds as many entries as ours does by default.
func startBpftrace(kstack bool, maxObjects int) (*bpftraceProbe, error) {
	cmd := exec.Command("bpftrace", "-e", bpftraceScript(kstack))
	cmd.Env = append(os.Environ(), "BPFTRACE_MAP_KEYS_MAX="+strconv.Itoa(maxObjects))
	// bpftrace warns that it cannot raise RLIMIT_MEMLOCK, which kernels
	// since 5.11 do not use: its stderr is shown only if it fails.
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting bpftrace: %w", err)
	}
	p := &bpftraceProbe{cmd: cmd}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "ready" {
				ready <- nil
				// Keep draining, so that bpftrace never blocks on a full pipe.
				for sc.Scan() {
				}
				return
			}
		}
		ready <- errors.New("bpftrace exited before its probes were attached")
	}()
	select {
	case err = <-ready:
	case <-time.After(time.Minute):
		err = errors.New("bpftrace did not attach its probes within a minute")
	}
	if err != nil {
		_ = p.Close() // err says what failed
		return nil, fmt.Errorf("%w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return p, nil
}

func (p *bpftraceProbe) Close() error {
	// bpftrace exits on SIGINT after running END; one that already
	// exited is reaped all the same.
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	return p.cmd.Wait()
}

// bpftraceMissing says why the bpftrace rows cannot run, or "" if they can.
func bpftraceMissing() string {
	if _, err := exec.LookPath("bpftrace"); err != nil {
		return "bpftrace is not installed (apt-get install -y bpftrace; `make bench` installs it)"
	}
	return ""
}
