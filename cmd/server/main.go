// Command lxd-gha-autoscaler runs self-hosted GitHub Actions runners in
// ephemeral LXD instances, one per queued job.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghapp"
)

const usage = `usage: lxd-gha-autoscaler COMMAND [flags]

commands:
  serve    --config FILE   run the service
  validate --config FILE [--check-github] [--check-lxd] [--live [--webhook-url URL]]
                           check a config; exits non-zero listing every problem.
                           --check-github also reads the pools' runner groups at
                           GitHub, with the config's App credentials; --check-lxd
                           asks LXD whether some member can run each pool; --live
                           checks everything, as doctor does
` + doctorUsage + setupUsage + `  lxd trust --config FILE --token TOKEN
                           make a client certificate for the service (at
                           lxd.client_cert and lxd.client_key, unless they exist)
                           and get LXD to trust it with a token from
                           lxc config trust add; pins lxd.server_cert
  version                  print the version
` + adminUsage + memberUsage + imageUsage

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var u usageError
		if errors.As(err, &u) {
			fmt.Fprint(os.Stderr, usage)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "lxd-gha-autoscaler:", err)
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"no command"}
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	switch cmd {
	case "serve":
		path := fs.String("config", "", "config file")
		logFormat := fs.String("log-format", "json", "json or console")
		logLevel := fs.String("log-level", "info", "debug, info, warn or error")
		if err := fs.Parse(args); err != nil {
			return usageError{err.Error()}
		}
		if *path == "" {
			return errors.New("serve: --config FILE is required")
		}
		log, err := newLogger(stderr, *logFormat, *logLevel)
		if err != nil {
			return err
		}
		cfg, err := loadConfig(*path)
		if err != nil {
			return fmt.Errorf("invalid config:\n%w", err)
		}
		return serve(ctx, cfg, log)
	case "validate", "doctor":
		path := fs.String("config", os.Getenv(ConfigEnv), "config file (default $"+ConfigEnv+")")
		withGitHub, withLXD, live := false, false, cmd == "doctor"
		if cmd == "validate" {
			fs.BoolVar(&withLXD, "check-lxd", false, "also ask LXD, with the config's credentials, whether some member can run each pool")
			fs.BoolVar(&withGitHub, "check-github", false, "also check the pools' runner groups at GitHub, with the config's App credentials")
			fs.BoolVar(&live, "live", false, "check the whole setup, as doctor does")
		}
		webhookURL := fs.String("webhook-url", "", "with --live (doctor): send a ping signed with the config's webhook secret to this URL, through the proxy")
		timeout := fs.Duration("timeout", doctorTimeout, "with --live (doctor): bound each check that asks LXD, GitHub or the service")
		if err := fs.Parse(args); err != nil {
			return usageError{err.Error()}
		}
		if fs.NArg() > 0 {
			return usageError{cmd + ": unexpected " + fs.Arg(0)}
		}
		if *path == "" {
			return fmt.Errorf("%s: --config FILE is required", cmd)
		}
		if live { // it checks the runner groups too
			return runDoctor(ctx, *path, *webhookURL, *timeout, stdout)
		}
		if *webhookURL != "" {
			return usageError{"validate: --webhook-url goes with --live"}
		}
		cfg, err := loadConfig(*path)
		if err != nil {
			return fmt.Errorf("%s is not valid:\n%w", *path, err)
		}
		warnings := cfg.Warnings
		if withGitHub {
			gh, err := ghapp.New(cfg.GitHub, zerolog.Nop())
			if err != nil {
				return err
			}
			more, err := checkRunnerGroups(ctx, cfg, gh)
			warnings = append(warnings, more...)
			if err != nil {
				printWarnings(stderr, warnings)
				return fmt.Errorf("%s: %w", *path, err)
			}
		}
		if withLXD {
			if err := checkLXD(ctx, cfg, stdout); err != nil {
				printWarnings(stderr, warnings)
				return fmt.Errorf("%s: lxd:\n%w", *path, err)
			}
		}
		printWarnings(stderr, warnings)
		fmt.Fprintf(stdout, "%s: ok\n", *path)
		return nil
	case "setup":
		return setupCommand(ctx, args, stdout, stderr)
	case "image":
		return imageCommand(ctx, args, stdout, stderr)
	case "lxd":
		return lxdCommand(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		if handled, err := memberCommand(ctx, cmd, args, stdout, stderr); handled {
			return err
		}
		if handled, err := adminCommand(ctx, cmd, args, stdout, stderr); handled {
			return err
		}
	}
	return usageError{"unknown command " + cmd}
}
