// Package jsonpost is the HTTP side of the frontend's webhook plug-ins: a
// JSON POST bounded by a timeout, whose answer is read in full or not at
// all.
package jsonpost

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// CheckURL reports whether s is an http or https URL with a host.
func CheckURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("webhook URL %q: want an http:// or https:// URL", s)
	}
	return nil
}

// NewClient is the default client of a webhook: it follows no redirects.
func NewClient() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// MaxAnswer bounds the answer read.
const MaxAnswer = 64 << 10

// Post POSTs body as JSON to u within timeout and decodes a 2xx answer into
// out (nil: the answer is ignored). Any other status is an error.
func Post(ctx context.Context, c *http.Client, u string, timeout time.Duration, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	r := io.LimitReader(resp.Body, MaxAnswer)
	if resp.StatusCode < 200 || resp.StatusCode > 299 || out == nil {
		_, _ = io.Copy(io.Discard, r)
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}
	if err := json.NewDecoder(r).Decode(out); err != nil {
		return fmt.Errorf("bad answer: %w", err)
	}
	return nil
}
