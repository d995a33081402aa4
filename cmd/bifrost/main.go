// Command bifrost runs a Bifrost storage node, an MQTT frontend, both in one
// process (standalone, the default), or the operator's admin client.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

const usage = `bifrost: a distributed MQTT broker

Usage:
  bifrost [standalone] [flags]   one storage node + frontend in one process (data in ./data)
  bifrost store [flags]          a storage node that joins a cluster
  bifrost frontend [flags]       a stateless MQTT frontend
  bifrost admin [flags] COMMAND  the operator's client (bifrost admin -h)

Run 'bifrost COMMAND -h' for a command's flags.
`

// usageError is a bad flag or argument: one line on stderr, exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "standalone"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "standalone":
		err = runServer(cmd, args, stderr)
	case "store":
		err = runServer(cmd, args, stderr)
	case "frontend":
		err = runFrontend(args, stderr)
	case "admin":
		err = runAdmin(args, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		err = usagef("bifrost: unknown command %q (want standalone, store, frontend or admin)", cmd)
	}
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, ue.msg)
		return 2
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, ee.msg)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "bifrost:", err)
	return 1
}

// exitError ends the program with a code and an optional message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// parseInterspersed parses flags that may come before, between or after
// positional arguments, and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// newFlagSet returns a flag set whose parse errors are returned, not printed.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// flagError turns a flag package error into a one-line usage error.
func flagError(cmd string, fs *flag.FlagSet, err error, stderr io.Writer) error {
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stderr)
		fmt.Fprintf(stderr, "Usage of bifrost %s:\n", cmd)
		fs.PrintDefaults()
		return flag.ErrHelp
	}
	return usagef("bifrost %s: %v", cmd, err)
}
