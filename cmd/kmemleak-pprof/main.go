// Command kmemleak-pprof turns the OTLP profiles the kmemleak receiver
// exported into one pprof profile of in-use kernel memory, for
// `go tool pprof -http=: kmem.pb.gz` to show as a flame graph:
//
//	kmemleak-pprof -o kmem.pb.gz profiles.json
//
// The input is what the collector wrote: the file exporter's JSON lines,
// one OTLP export request a line, or a binary OTLP export request (as the
// end-to-end test's server saves them). Of each allocator's profiles the
// latest are taken. Each stack gets an outermost frame naming its
// allocator, so that the flame graph splits by allocator first; the
// samples' attributes (cache, stack hash, process, container) become pprof
// labels, for -tagfocus and -tagshow.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"go.opentelemetry.io/collector/pdata/pprofile"
)

func main() {
	out := flag.String("o", "kmem.pb.gz", "the pprof file to write")
	flag.Usage = func() {
		_, _ = fmt.Fprintf(flag.CommandLine.Output(), "usage: kmemleak-pprof [-o kmem.pb.gz] FILE...\n\n"+
			"FILE holds OTLP profiles from the kmemleak receiver: the file exporter's JSON lines, or a binary OTLP export request.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*out, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "kmemleak-pprof:", err)
		os.Exit(1)
	}
}

func run(out string, files []string) error {
	var all []pprofile.Profiles
	for _, name := range files {
		pds, err := readFile(name)
		if err != nil {
			return err
		}
		all = append(all, pds...)
	}
	p, err := Convert(all)
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := p.Write(f); err != nil {
		_ = f.Close() // the write error is the one to return
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return f.Close()
}

// readFile reads every export request of a file.
func readFile(name string) ([]pprofile.Profiles, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		return readJSONLines(name, bytes.NewReader(data))
	}
	pd, err := (&pprofile.ProtoUnmarshaler{}).UnmarshalProfiles(data)
	if err != nil {
		return nil, fmt.Errorf("%s: neither JSON lines nor a binary OTLP profiles request: %w", name, err)
	}
	return []pprofile.Profiles{pd}, nil
}

func readJSONLines(name string, r io.Reader) ([]pprofile.Profiles, error) {
	var out []pprofile.Profiles
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 256<<20)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		pd, err := (&pprofile.JSONUnmarshaler{}).UnmarshalProfiles(sc.Bytes())
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		out = append(out, pd)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(out) == 0 {
		return nil, errors.New(name + ": no profiles")
	}
	return out, nil
}
