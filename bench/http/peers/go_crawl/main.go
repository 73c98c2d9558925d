// SPDX-License-Identifier: MIT
// go_crawl: the Go peer of the crawl benchmark (bench/http_run.py), written
// the way a Go programmer writes the scraper of examples/scraper.c: c fetching
// goroutines (net/http, keep-alive) that each parse the page they fetched with
// golang.org/x/net/html (Go's scheduler spreads them over GOMAXPROCS cores),
// and one coordinator goroutine that owns the seen-set and the frontier.
//
// The same rules as the braid scraper: follow <a href> links that resolve
// (fragment dropped) to the start URL's scheme, host and port; fetch each URL
// at most once and at most -limit URLs in all; a status other than 200 is a
// broken page.
//
//	go_crawl -url http://127.0.0.1:PORT/ -limit 10000 -c 64
//
// Prints one JSON line: pages, ok, broken, offhost, elapsed_s, pages_per_s,
// rss_kib. Build without downloads: GO111MODULE=off GOPATH=/usr/share/gocode
// (Debian's golang-golang-x-net-dev).
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/net/html"
)

type result struct {
	url     string
	status  int
	title   string
	links   []string
	offhost int
	err     error
}

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

func parse(base *url.URL, body io.Reader, r *result) {
	doc, err := html.Parse(body)
	if err != nil {
		r.err = err
		return
	}
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "title":
				if r.title == "" && n.FirstChild != nil && n.FirstChild.Type == html.TextNode {
					r.title = strings.TrimSpace(n.FirstChild.Data)
				}
			case "a":
				for _, a := range n.Attr {
					if a.Key != "href" {
						continue
					}
					u, err := base.Parse(strings.TrimSpace(a.Val))
					if err != nil {
						continue
					}
					u.Fragment = ""
					u.RawFragment = ""
					if u.Scheme == base.Scheme && u.Host == base.Host {
						r.links = append(r.links, u.String())
					} else {
						r.offhost++
					}
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
}

func main() {
	start := flag.String("url", "", "start URL")
	limit := flag.Int("limit", 1000, "fetch at most this many URLs")
	c := flag.Int("c", 64, "fetches in flight")
	flag.Parse()
	_, err := url.Parse(*start)
	if err != nil || *start == "" {
		fmt.Fprintln(os.Stderr, "go_crawl: -url is required")
		os.Exit(2)
	}
	tr := &http.Transport{MaxIdleConns: *c, MaxIdleConnsPerHost: *c, MaxConnsPerHost: *c,
		DisableCompression: true}
	client := &http.Client{Transport: tr}

	todo := make(chan string, *c)
	done := make(chan result, *c)
	for w := 0; w < *c; w++ {
		go func() {
			for u := range todo {
				r := result{url: u}
				resp, err := client.Get(u)
				if err != nil {
					r.err = err
					done <- r
					continue
				}
				r.status = resp.StatusCode
				if resp.StatusCode == 200 {
					base, _ := url.Parse(u)
					parse(base, resp.Body, &r)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				done <- r
			}
		}()
	}

	t0 := time.Now()
	seen := map[string]struct{}{*start: {}}
	frontier := []string{*start}
	inflight, pages, ok, broken, offhost := 0, 0, 0, 0, 0
	for len(frontier) > 0 || inflight > 0 {
		// Hand out work while there is room, otherwise take a result.
		var send chan string
		var next string
		if len(frontier) > 0 && inflight < *c {
			send, next = todo, frontier[0]
		}
		select {
		case send <- next:
			frontier[0] = ""
			frontier = frontier[1:]
			inflight++
		case r := <-done:
			inflight--
			pages++
			if r.err != nil || r.status != 200 {
				broken++
			} else {
				ok++
			}
			offhost += r.offhost
			for _, l := range r.links {
				if _, dup := seen[l]; dup || len(seen) >= *limit {
					continue
				}
				seen[l] = struct{}{}
				frontier = append(frontier, l)
			}
		}
	}
	close(todo)
	el := time.Since(t0).Seconds()
	fmt.Printf("{\"impl\":\"go\",\"pages\":%d,\"ok\":%d,\"broken\":%d,\"offhost\":%d,"+
		"\"elapsed_s\":%.6f,\"pages_per_s\":%.1f,\"rss_kib\":%d}\n",
		pages, ok, broken, offhost, el, float64(pages)/el, vmhwm())
}
