// SPDX-License-Identifier: MIT
// spawn_churn: the Go peer of bench/spawn_churn.c: -n goroutines started and
// waited for in waves of -wave (a WaitGroup per wave). Prints ns per task.
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

var sink int64

func main() {
	n := flag.Int("n", 1000000, "tasks in all")
	wave := flag.Int("wave", 1000, "tasks per wave")
	flag.Parse()

	start := time.Now()
	done := 0
	for done < *n {
		k := *wave
		if *n-done < k {
			k = *n - done
		}
		var wg sync.WaitGroup
		wg.Add(k)
		for i := 0; i < k; i++ {
			go func() { wg.Done() }()
		}
		wg.Wait()
		done += k
	}
	el := time.Since(start)
	json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"bench": "spawn_churn", "impl": "go", "n": *n, "wave": *wave, "ops": *n,
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
