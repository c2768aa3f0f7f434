/** What one line typed at the `archety relay-sim` prompt asks for. */
import { E164 } from '../../relay/relayEvent.ts';

export type SimCommand =
  | { kind: 'message'; text: string }
  | { kind: 'as'; phone: string }
  | { kind: 'direct' }
  | { kind: 'group'; name: string; participants: string[] }
  | { kind: 'photo'; path: string; caption?: string }
  | { kind: 'reply'; text: string }
  | { kind: 'help' }
  | { kind: 'quit' }
  | { kind: 'empty' }
  | { kind: 'invalid'; message: string };

export const COMMANDS_HELP = `  /as +15551234567           type as this phone number
  /direct                    a 1:1 chat with Sage (the default)
  /group <name> [+1… +1…]    a group chat iMessage;+;<name>, with these participants;
                             Sage answers there when named ("Sage, …") or replied to
  /photo <path> [caption]    send an image (jpg, png, gif, webp; at most 10 MiB)
  /reply <text>              answer Sage's last message in this chat
  /help                      this list
  /quit                      leave (Ctrl+D too)
  anything else              is sent as a message`;

/** Group names become the chat guid `iMessage;+;<name>`: one word, no `;`. */
const GROUP_NAME = /^[^\s;]{1,100}$/;

export const isPhone = (s: string): boolean => s.length <= 200 && E164.test(s);

export function parseLine(input: string): SimCommand {
  const line = input.trim();
  if (line === '') return { kind: 'empty' };
  if (!line.startsWith('/')) return { kind: 'message', text: line };
  const [word, ...words] = line.split(/\s+/);
  const rest = line.slice(word.length).trim();
  switch (word.toLowerCase()) {
    case '/as':
      if (words.length !== 1 || !isPhone(words[0])) {
        return { kind: 'invalid', message: 'usage: /as +15551234567 (a phone number in E.164 form)' };
      }
      return { kind: 'as', phone: words[0] };
    case '/direct':
      return { kind: 'direct' };
    case '/group': {
      const [name, ...participants] = words;
      if (!name || !GROUP_NAME.test(name)) {
        return { kind: 'invalid', message: 'usage: /group <name> [+15551234567 …] (the name is one word)' };
      }
      const bad = participants.find((p) => !isPhone(p));
      if (bad !== undefined)
        return { kind: 'invalid', message: `/group: "${bad}" is not a phone number in E.164 form` };
      return { kind: 'group', name, participants: [...new Set(participants)] };
    }
    case '/photo':
      return parsePhoto(rest);
    case '/reply':
      return rest ? { kind: 'reply', text: rest } : { kind: 'invalid', message: 'usage: /reply <text>' };
    case '/help':
    case '/?':
      return { kind: 'help' };
    case '/quit':
    case '/exit':
      return { kind: 'quit' };
    default:
      return { kind: 'invalid', message: `unknown command ${word}; /help lists the commands` };
  }
}

/** `/photo <path> [caption]`; a path with spaces is written in quotes. */
function parsePhoto(rest: string): SimCommand {
  const quoted = /^(["'])(.+?)\1(?:\s+(.*))?$/.exec(rest);
  const m = quoted ? [quoted[2], quoted[3]] : /^(\S+)(?:\s+(.*))?$/.exec(rest)?.slice(1);
  if (!m?.[0]) return { kind: 'invalid', message: 'usage: /photo <path> [caption]' };
  const caption = m[1]?.trim();
  return { kind: 'photo', path: m[0], ...(caption ? { caption } : {}) };
}
