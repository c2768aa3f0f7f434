/**
 * The simulator's output: a transcript of lines such as `[group lisbon] Sage: …`. On a
 * terminal, lines that arrive while the person is typing are written above the prompt and
 * the prompt is redrawn with what they had typed (readline's refresh), so a reply never cuts
 * through a half-written message. Colours only on a terminal (and not under NO_COLOR).
 */
import readline from 'node:readline';

export interface Palette {
  label(s: string): string;
  you(s: string): string;
  sage(s: string): string;
  dim(s: string): string;
  ok(s: string): string;
  warn(s: string): string;
  error(s: string): string;
}

export function palette(color: boolean): Palette {
  const sgr = (open: number, close: number) => (s: string) => (color ? `\x1b[${open}m${s}\x1b[${close}m` : s);
  return {
    label: sgr(36, 39),
    you: sgr(32, 39),
    sage: sgr(35, 39),
    dim: sgr(2, 22),
    ok: sgr(32, 39),
    warn: sgr(33, 39),
    error: sgr(31, 39),
  };
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: ANSI escapes are what it strips
const ANSI = /\x1b\[[0-9;]*m/g;

/** Characters a string takes on screen (escapes removed; wide characters counted as one). */
export const visibleLength = (s: string): number => [...s.replace(ANSI, '')].length;

export class Transcript {
  private rl: readline.Interface | null = null;
  /** On-screen length of the line just entered, while nothing has been written below it. */
  private entered: number | null = null;

  /**
   * @param live true when the person types at a terminal: output goes above a live prompt.
   */
  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly err: NodeJS.WritableStream,
    readonly p: Palette,
    private readonly live: boolean,
  ) {}

  /** The prompt to keep intact; `null` once it is closed. */
  attach(rl: readline.Interface | null): void {
    this.rl = rl;
  }

  /** One line (or several) of the transcript; `toStderr` only matters without a terminal. */
  print(text: string, toStderr = false): void {
    this.entered = null;
    if (!this.live || !this.rl) {
      (toStderr ? this.err : this.out).write(`${text}\n`);
      return;
    }
    readline.clearLine(this.out, 0);
    readline.cursorTo(this.out, 0);
    this.out.write(`${text}\n`);
    this.rl.prompt(true);
  }

  /** The person pressed enter on a line taking `length` characters on screen, prompt included. */
  lineEntered(length: number): void {
    this.entered = length;
  }

  /**
   * Appends a short mark (e.g. ` ✓`) to the line just entered when nothing was written
   * after it and it fits; otherwise prints `fallback` as a line of its own.
   */
  mark(suffix: string, fallback: string): void {
    const width = this.out.columns ?? 80;
    if (!this.live || !this.rl || this.entered === null || this.entered + visibleLength(suffix) >= width) {
      this.print(fallback);
      return;
    }
    readline.moveCursor(this.out, 0, -1);
    readline.cursorTo(this.out, this.entered);
    this.out.write(suffix);
    readline.moveCursor(this.out, 0, 1);
    this.entered = null;
    this.rl.prompt(true);
  }
}
