/** The tests' OAuth provider (`fakeOAuthServer.ts`), closed after the file's tests. */
import { onCleanup } from './cleanup.ts';
import { type FakeOAuthBehaviour, type FakeOAuthProvider, listenFakeOAuthProvider } from './fakeOAuthServer.ts';

export { authorize, type FakeOAuthProvider } from './fakeOAuthServer.ts';

export async function startFakeOAuthProvider(options: Partial<FakeOAuthBehaviour> = {}): Promise<FakeOAuthProvider> {
  const fake = await listenFakeOAuthProvider(options);
  onCleanup(() => fake.close());
  return fake;
}
