// SPDX-License-Identifier: MIT
// spawn_live: the Go peer of bench/spawn_live.c: -n goroutines alive at once,
// each calls runtime.Gosched() once, then all are waited for. Prints ns per
// task (spawn + one yield + exit + wait).
//
// The goroutines wait on a start gate closed once all are spawned: without it
// the other Ps run and finish them while main is still spawning (at no time
// are n alive, and their stacks are recycled), whereas a braid task does not
// run before its spawner blocks. The gate makes "all n alive at once" true
// here as it is there. -gate=false runs the plain version for comparison.
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
	n := flag.Int("n", 1000000, "tasks")
	useGate := flag.Bool("gate", true, "hold every goroutine at a start gate until all are spawned")
	flag.Parse()

	var wg sync.WaitGroup
	start := time.Now()
	wg.Add(*n)
	gate := make(chan struct{})
	for i := 0; i < *n; i++ {
		go func() {
			if *useGate {
				<-gate
			}
			runtime.Gosched()
			wg.Done()
		}()
	}
	close(gate)
	wg.Wait()
	el := time.Since(start)
	json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"bench": "spawn_live", "impl": "go", "n": *n, "gate": *useGate, "ops": *n,
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
