// SPDX-License-Identifier: MIT
// sleepers: the Go peer of bench/sleepers.c: -n goroutines each sleep -ms
// milliseconds (time.Sleep), all alive at once, then all are waited for.
// Prints the wall time and peak RSS (VmHWM).
//
// The goroutines wait on a start gate closed once all are spawned, so that all
// n sleep at the same time as braid's tasks do (a braid task does not run
// before its spawner blocks): spawning a million goroutines takes longer than
// the sleep, and without the gate the first ones finish (and their stacks are
// reused) before the last ones start. -gate=false runs the plain version for
// comparison.
package main

import (
	"encoding/json"
	"flag"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	n := flag.Int("n", 100000, "tasks")
	ms := flag.Int("ms", 1000, "sleep per task, milliseconds")
	useGate := flag.Bool("gate", true, "hold every goroutine at a start gate until all are spawned")
	flag.Parse()

	d := time.Duration(*ms) * time.Millisecond
	var wg sync.WaitGroup
	start := time.Now()
	wg.Add(*n)
	gate := make(chan struct{})
	for i := 0; i < *n; i++ {
		go func() {
			if *useGate {
				<-gate
			}
			time.Sleep(d)
			wg.Done()
		}()
	}
	close(gate)
	wg.Wait()
	el := time.Since(start)
	json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"bench": "sleepers", "impl": "go", "n": *n, "gate": *useGate, "ms": *ms, "ops": *n,
		"gomaxprocs": runtime.GOMAXPROCS(0),
		"vmhwm_kib":  vmhwmKiB(),
		"elapsed_s":  el.Seconds(),
		"ns_per_op":  float64(el.Nanoseconds()) / float64(*n),
	})
}

// vmhwmKiB: peak RSS of this process since exec (VmHWM from /proc/self/status).
// run.py prefers it to wait4's ru_maxrss, which also counts the forking parent.
func vmhwmKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, ln := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(ln, "VmHWM:") {
			f := strings.Fields(ln)
			if len(f) >= 2 {
				v, err := strconv.ParseInt(f[1], 10, 64)
				if err == nil {
					return v
				}
			}
		}
	}
	return -1
}
