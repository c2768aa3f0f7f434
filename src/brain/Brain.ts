/** What Sage's brain does for a conversation: answer, look at photos, and screen text. */

export interface ChatTurn {
  role: 'user' | 'assistant';
  /** The sender's phone number for user turns (group chats have several). */
  sender?: string;
  text: string;
}

export interface ReplyRequest {
  persona: string;
  kind: 'direct' | 'group';
  /** Who wrote the message being answered. */
  sender: string;
  text: string;
  /** Earlier turns of this conversation only, oldest first. */
  history: ChatTurn[];
  /** Memories of this conversation's container only. */
  memories: string[];
  /** Descriptions of the photos in view (this message's and recent ones). */
  photos: string[];
  /** Relationship stage with the sender (new, acquainted, friend, close). */
  stage: string;
}

export interface ModerationResult {
  flagged: boolean;
  /** Self-harm content: answered with crisis resources. */
  selfHarm: boolean;
  categories: string[];
}

export interface Photo {
  mime: string;
  data: Buffer;
}

export interface Brain {
  readonly mode: 'openai' | 'offline';
  reply(request: ReplyRequest, signal?: AbortSignal): Promise<string>;
  describePhoto(photo: Photo, signal?: AbortSignal): Promise<string>;
  moderate(text: string, signal?: AbortSignal): Promise<ModerationResult>;
}
