package chaos

import (
	"bufio"
	"encoding/json"
	"os"
	"time"
)

// deadlineSlack is how far past its deadline a call may finish before the
// checker calls it an overrun: the log's deadline is rounded down to the
// second, and the answer takes a moment to write.
const deadlineSlack = 2 * time.Second

// serverCall is the part of ledgerd's request log line ("finished call")
// the checker reads.
type serverCall struct {
	Time      time.Time `json:"time"`
	Message   string    `json:"msg"`
	Namespace string    `json:"namespace"`
	Method    string    `json:"grpc.method"`
	Key       string    `json:"key"`
	Deadline  time.Time `json:"grpc.request.deadline"`
}

// coalescing reads the "ledgerd serving" lines of the ledgerd logs and
// says whether the replicas coalesced: "on", "off", "mixed", or "" when no
// line said.
func coalescing(logPaths []string) (string, error) {
	seen := map[bool]bool{}
	for _, p := range logPaths {
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		scanner := bufio.NewScanner(f)
		scanner.Buffer(make([]byte, 64<<10), 1<<20)
		for scanner.Scan() {
			var line struct {
				Message  string `json:"msg"`
				Coalesce *bool  `json:"coalesce"`
			}
			if json.Unmarshal(scanner.Bytes(), &line) == nil && line.Message == "ledgerd serving" && line.Coalesce != nil {
				seen[*line.Coalesce] = true
			}
		}
		err = scanner.Err()
		_ = f.Close()
		if err != nil {
			return "", err
		}
	}
	switch {
	case seen[true] && seen[false]:
		return "mixed", nil
	case seen[true]:
		return "on", nil
	case seen[false]:
		return "off", nil
	}
	return "", nil
}

// deadlineOverruns reads the ledgerd logs and counts the calls in
// namespace that finished later than their deadline (plus deadlineSlack):
// the server's own proof that every RPC is bounded by its deadline, also
// while the database hangs.
func deadlineOverruns(logPaths []string, namespace string, a *anomalies) (int, error) {
	overruns := 0
	for _, p := range logPaths {
		f, err := os.Open(p)
		if err != nil {
			return overruns, err
		}
		scanner := bufio.NewScanner(f)
		scanner.Buffer(make([]byte, 64<<10), 1<<20)
		for scanner.Scan() {
			var c serverCall
			if json.Unmarshal(scanner.Bytes(), &c) != nil || c.Message != "finished call" || c.Namespace != namespace || c.Deadline.IsZero() {
				continue
			}
			if c.Time.After(c.Deadline.Add(deadlineSlack)) {
				overruns++
				a.notef("overrun: %s of %s finished at %s, its deadline was %s", c.Method, c.Key, c.Time.Format(time.RFC3339Nano), c.Deadline.Format(time.RFC3339))
			}
		}
		err = scanner.Err()
		_ = f.Close()
		if err != nil {
			return overruns, err
		}
	}
	return overruns, nil
}
