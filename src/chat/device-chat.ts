import type { Chat } from "../records";
import type { Store } from "../store/store";

type CreateChat = (o: { owner: string; name: string; deviceId: string }) => Promise<Chat>;

/** The owner's active chat bound to a device, created (and announced to the owner's browsers) on its first message. */
export const deviceChat =
  (store: Pick<Store, "findDeviceChat">, createChat: CreateChat) =>
  async (owner: string, deviceId: string): Promise<Chat> =>
    (await store.findDeviceChat(owner, deviceId)) ?? createChat({ owner, name: deviceId, deviceId });
