package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// controlTimeout bounds one call to the control server: some answer only
// once something happened in the cluster (a replica stopped, say).
const controlTimeout = 60 * time.Second

// control is the harness's control server (HTTP, JSON).
type control struct {
	base string
	http *http.Client
}

func newControl(base string) *control {
	return &control{base: base, http: &http.Client{Timeout: controlTimeout}}
}

// post POSTs body (an empty object when nil) to path, and fails unless the
// answer is 2xx, with the answer's body, which says what did not hold.
func (c *control) post(ctx context.Context, path string, body json.RawMessage) error {
	if len(body) == 0 {
		body = json.RawMessage("{}")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	_, err = c.send(req)
	return err
}

// errAbsent is get's error for a 404 answer.
var errAbsent = fmt.Errorf("404")

// entry is the control server's view of a row (GET /entry).
type entry struct {
	State    string  `json:"state"`
	Owner    string  `json:"owner"`
	Attempts int     `json:"attempts"`
	Result   *string `json:"result"`
}

// entry reads the row of a key as the database holds it; errAbsent when
// there is none.
func (c *control) entry(ctx context.Context, namespace, key string) (entry, error) {
	query := url.Values{"namespace": {namespace}, "key": {key}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/entry?"+query.Encode(), nil)
	if err != nil {
		return entry{}, err
	}
	data, err := c.send(req)
	if err != nil {
		return entry{}, err
	}
	var e entry
	if err := json.Unmarshal(data, &e); err != nil {
		return entry{}, fmt.Errorf("GET /entry: %w in %q", err, data)
	}
	return e, nil
}

func (c *control) send(req *http.Request) ([]byte, error) {
	what := req.Method + " " + req.URL.Path
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, errAbsent
	case resp.StatusCode/100 != 2:
		return nil, fmt.Errorf("%s: HTTP %d: %s", what, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	return data, nil
}
