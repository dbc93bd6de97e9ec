package crowdsec

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
)

// maxBody bounds what hbf reads of one answer: a startup snapshot of the
// community blocklist and a few imported lists stays well under it.
const maxBody = 512 << 20

// Config is how to reach a LAPI.
type Config struct {
	URL    string // http(s)://host:port
	APIKey string // a bouncer's key (cscli bouncers add); none: the client certificate
	// TLS, as LAPI serves it (the CA that signed its certificate, a client
	// certificate where LAPI asks for one); nil: the host's defaults.
	TLS *tls.Config
	// The stream's filters: origins to keep, and scenarios whose name
	// holds (or does not hold) any of these strings.
	Origins                []string
	ScenariosContaining    []string
	ScenariosNotContaining []string
	// Timeout bounds one request.
	Timeout   time.Duration
	UserAgent string
}

// Client reads LAPI's decision stream.
type Client struct {
	cfg  Config
	base *url.URL
	http *http.Client
}

// New checks cfg and builds its HTTP client.
func New(cfg Config) (*Client, error) {
	base, err := url.Parse(cfg.URL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("LAPI URL %q: write http://host:port or https://host:port", cfg.URL)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // LAPI is local, or at least not behind the host's web proxy
	if cfg.TLS != nil {
		tr.TLSClientConfig = cfg.TLS
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	return &Client{cfg: cfg, base: base, http: &http.Client{Transport: tr, Timeout: cfg.Timeout}}, nil
}

// Changes are what one read of the stream returned: a startup read holds
// every decision in force (New), a later one what changed since the last
// read with this key.
type Changes struct {
	New     []Decision `json:"new"`
	Deleted []Decision `json:"deleted"`
}

// refused reports whether err is LAPI refusing the credentials.
func refused(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && (se.Code == http.StatusForbidden || se.Code == http.StatusUnauthorized)
}

// StatusError is an HTTP answer other than 200.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("LAPI answered %d %s", e.Code, http.StatusText(e.Code))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// Stream reads the decision stream: with startup, every decision in force;
// without, the changes since this key's last read. LAPI moves the key's
// "last pull" once it has answered, so an answer lost on the way is lost
// for good: read with startup again from time to time.
func (c *Client) Stream(ctx context.Context, startup bool) (Changes, error) {
	q := url.Values{}
	q.Set("startup", fmt.Sprint(startup))
	for key, values := range map[string][]string{"origins": c.cfg.Origins,
		"scenarios_containing": c.cfg.ScenariosContaining, "scenarios_not_containing": c.cfg.ScenariosNotContaining} {
		if len(values) > 0 {
			q.Set(key, strings.Join(values, ","))
		}
	}
	// Without a key, the client certificate is the bouncer's credential.
	headers := map[string]string{}
	if c.cfg.APIKey != "" {
		headers["X-Api-Key"] = c.cfg.APIKey
	}
	var ch Changes
	err := c.do(ctx, http.MethodGet, "/v1/decisions/stream?"+q.Encode(), nil, headers, &ch)
	switch {
	case refused(err) && c.cfg.APIKey != "":
		err = fmt.Errorf("%w: the key is not a bouncer's (cscli bouncers add NAME -o raw prints one)", err)
	case refused(err):
		err = fmt.Errorf("%w: LAPI refused the client certificate: it takes those signed by its CA whose OU is in its api.server.tls.bouncers_allowed_ou", err)
	}
	return ch, err
}

// do sends a request and decodes a 200's JSON body into out.
func (c *Client) do(ctx context.Context, method, path string, body any, headers map[string]string, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.base.String(), "/")+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.cfg.UserAgent != "" {
		req.Header.Set("User-Agent", c.cfg.UserAgent)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("LAPI %s: %w", c.base.Host, err)
	}
	defer resp.Body.Close()
	limited := io.LimitReader(resp.Body, maxBody+1)
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		snippet, _ := io.ReadAll(io.LimitReader(limited, 512))
		return &StatusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(snippet))}
	}
	// JSON v2: a snapshot of 100,000 decisions decodes in a third of the
	// time encoding/json takes.
	if err := jsonv2.UnmarshalRead(limited, out); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("LAPI's answer to %s is cut short, or over %d MiB", path, maxBody>>20)
		}
		return fmt.Errorf("LAPI's answer to %s is not the JSON expected: %w", path, err)
	}
	return nil
}
