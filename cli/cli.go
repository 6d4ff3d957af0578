// Package cli is rdsproxy's command line: the kong command tree, the
// configuration layers (flags > RDSPROXY_* environment > YAML file >
// defaults), logging setup and exit codes. It is the only package that
// reads argv, the environment and files, and the only one that exits.
//
// docs/architecture.md §8 describes the layering it wires together.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/alecthomas/kong"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
	// ExitInterrupted is a command stopped by Ctrl-C or SIGTERM before it
	// finished (128+SIGINT). Commands that serve until stopped (connect,
	// server) exit 0 then.
	ExitInterrupted = 130
)

// ExitError carries an exit code out of a command. Err may be nil when
// the command already said what went wrong (usage errors).
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

// Globals are flags every command has.
type Globals struct {
	Config    configFlag       `help:"YAML configuration file; its keys are the long flag names (also read: $$XDG_CONFIG_HOME/rdsproxy/config.yaml, by default ~/.config/rdsproxy/config.yaml)." env:"RDSPROXY_CONFIG" placeholder:"FILE"`
	LogLevel  string           `help:"Log level: debug, info, warn or error (default: warn for a client on a terminal, else info)." placeholder:"LEVEL" env:"RDSPROXY_LOG_LEVEL"`
	LogFormat string           `help:"Log format: text or json." default:"text" enum:"text,json" env:"RDSPROXY_LOG_FORMAT"`
	Quiet     bool             `short:"q" help:"Only errors and what was asked for: warn-level logs, no progress indicator." env:"RDSPROXY_QUIET"`
	Verbose   bool             `short:"v" help:"Info-level logs on a terminal too (what the client does, step by step), instead of a progress indicator." env:"RDSPROXY_VERBOSE"`
	Version   kong.VersionFlag `help:"Print the version and exit."`
}

// CLI is the command tree.
type CLI struct {
	Globals
	Server     ServerCmd     `cmd:"" help:"Run the server inside the VPC: discover databases and relay sessions to them."`
	Connect    ConnectCmd    `cmd:"" help:"Listen locally and relay to databases through an rdsproxy server, injecting IAM tokens."`
	List       ListCmd       `cmd:"" help:"List the databases a server serves."`
	Psql       PsqlCmd       `cmd:"" help:"Run psql against a target through a tunnel that lasts as long as psql."`
	Token      TokenCmd      `cmd:"" help:"Print an IAM auth token for a target."`
	Env        EnvCmd        `cmd:"" help:"Print shell exports (PGHOST, PGPORT, …) for a target that rdsproxy connect serves."`
	Doctor     DoctorCmd     `cmd:"" help:"Check step by step what a connection needs, and say how to fix what fails."`
	Completion CompletionCmd `cmd:"" help:"Print a shell completion script (bash, zsh, fish)."`
	Targets    TargetsCmd    `cmd:"" name:"__targets" hidden:"" help:"Print the target names of the last list."`
	Servers    ServersCmd    `cmd:"" name:"__servers" hidden:"" help:"Print the server names of the configuration file."`
	VersionCmd VersionCmd    `cmd:"" name:"version" help:"Print the version."`
}

// Env is the process environment the CLI may read.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Version        string
	args           []string // as given to Run, for configuration reloads
	signals        *signals // SIGINT/SIGTERM handling; nil outside Run
	stderr         *stderrLine
}

// Run parses args (without the program name), runs the command and
// returns the process exit code.
func Run(args []string, env Env) int {
	ctx, sigs, stop := watchSignals(context.Background())
	defer stop()
	env.signals = sigs
	return exitStatus(ctx, run(ctx, args, env), env)
}

// exitStatus reports err on stderr and returns the exit status. A command
// a signal interrupted before it finished exits 130, as shells expect,
// without the error chain the cancellation produced.
func exitStatus(ctx context.Context, err error, env Env) int {
	var ee *ExitError
	switch {
	case err == nil:
		return ExitOK
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return ExitInterrupted
	case errors.As(err, &ee):
		if ee.Err != nil {
			fmt.Fprintf(env.Stderr, "rdsproxy: %v\n", ee.Err)
		}
		return ee.Code
	default:
		fmt.Fprintf(env.Stderr, "rdsproxy: %v\n", err)
		return ExitFailure
	}
}

// newParser builds the kong parser for cli.
func newParser(cli *CLI, env Env, exit func(int)) (*kong.Kong, error) {
	// One resolver reads all configuration files, so that the file
	// --config names can beat the user's key by key and share its servers:
	// as two of kong's resolvers, each chose its own server and the
	// user's file failed a --use only the named file had.
	files, err := newFileResolver()
	if err != nil {
		return nil, &ExitError{Code: ExitUsage, Err: err}
	}
	return kong.New(cli,
		kong.Name("rdsproxy"),
		kong.Description("Reach IAM-authenticated PostgreSQL on AWS RDS and Aurora in private subnets, with no passwords."),
		kong.UsageOnError(),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Resolvers(files),
		kong.Bind(files), // for configFlag.BeforeResolve
		kong.Writers(env.Stdout, env.Stderr),
		kong.Exit(exit),
		kong.Vars{"version": versionLine(env.Version)},
	)
}

func run(ctx context.Context, args []string, env Env) error {
	env.args = args
	var cli CLI
	exitCode := -1
	parser, err := newParser(&cli, env, func(code int) { exitCode = code })
	if err != nil {
		return err
	}
	kctx, err := parser.Parse(args)
	if exitCode >= 0 { // --help
		return &ExitError{Code: exitCode}
	}
	if err != nil {
		var pe *kong.ParseError
		if errors.As(err, &pe) {
			// kong prefixes a resolver's error with the flag it was
			// resolving, which for --use is an unrelated one (--help).
			var us *unknownServerError
			if errors.As(err, &us) {
				err = us
			}
			parser.Errorf("%s", err)
			if pe.Context != nil {
				pe.Context.PrintUsage(true)
			}
			return &ExitError{Code: ExitUsage}
		}
		return &ExitError{Code: ExitUsage, Err: err}
	}
	if cli.LogLevel != "" && !slices.Contains(logLevels, cli.LogLevel) {
		return &ExitError{Code: ExitUsage, Err: fmt.Errorf("--log-level must be one of %s, not %q", strings.Join(logLevels, ", "), cli.LogLevel)}
	}
	env.stderr = &stderrLine{w: env.Stderr}
	level := cli.logLevel(kctx.Command(), isTerminal(env.Stderr))
	log, err := newLogger(env.stderr, level, cli.LogFormat)
	if err != nil {
		return &ExitError{Code: ExitUsage, Err: err}
	}
	if !isServerCommand(kctx) { // the server reloads on SIGHUP (takeHangups)
		env.signals.hangupEnds()
	}
	kctx.BindTo(ctx, (*context.Context)(nil))
	err = kctx.Run(&cli.Globals, log, env)
	if cli.LogFormat == "json" && !(ctx.Err() != nil && errors.Is(err, context.Canceled)) { // as exitStatus: an interruption is no failure
		err = logFailure(log, err)
	}
	return err
}

// isServerCommand reports whether kctx runs rdsproxy server, which
// neither takes the client's server entries nor ends on SIGHUP.
func isServerCommand(kctx *kong.Context) bool {
	return strings.HasPrefix(kctx.Command(), "server")
}

// logFailure writes the error a command ended with as a log line, so that
// with --log-format json a log pipeline reads it like every other line,
// and returns it without the text, for exitStatus to print nothing more.
func logFailure(log *slog.Logger, err error) error {
	ee := &ExitError{Code: ExitFailure, Err: err}
	if err == nil || errors.As(err, &ee) && ee.Err == nil {
		return err
	}
	log.Error("rdsproxy: " + ee.Err.Error())
	return &ExitError{Code: ee.Code}
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}
