// SPDX-License-Identifier: MIT
// go_fetch: the Go peer of the fetch benchmark (bench/http_run.py): n GETs of
// one URL through net/http, at most c in flight (c goroutines share one
// http.Client whose transport keeps up to c keep-alive connections).
//
//	go_fetch -url http://127.0.0.1:PORT/ -n 1000 -c 100
//
// Prints one JSON line: elapsed_s (first request to last body read), n, ok,
// bytes, rss_kib (VmHWM).
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func vmhwm() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			var kib int64
			fmt.Sscanf(strings.TrimSpace(l[6:]), "%d", &kib)
			return kib
		}
	}
	return 0
}

func main() {
	url := flag.String("url", "", "URL to fetch")
	n := flag.Int("n", 1000, "requests")
	c := flag.Int("c", 100, "concurrency")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "go_fetch: -url is required")
		os.Exit(2)
	}
	tr := &http.Transport{MaxIdleConns: *c, MaxIdleConnsPerHost: *c, MaxConnsPerHost: *c,
		DisableCompression: true, IdleConnTimeout: 60 * time.Second}
	client := &http.Client{Transport: tr}

	var next, ok, nbytes int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < *c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for atomic.AddInt64(&next, 1) <= int64(*n) {
				resp, err := client.Get(*url)
				if err != nil {
					fmt.Fprintln(os.Stderr, "go_fetch:", err)
					continue
				}
				m, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				atomic.AddInt64(&nbytes, m)
				if resp.StatusCode == 200 {
					atomic.AddInt64(&ok, 1)
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	fmt.Printf("{\"impl\":\"go\",\"elapsed_s\":%.6f,\"n\":%d,\"ok\":%d,\"bytes\":%d,\"rss_kib\":%d}\n",
		el, *n, ok, nbytes, vmhwm())
	if ok != int64(*n) {
		os.Exit(1)
	}
}
