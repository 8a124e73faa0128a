import type { Store } from "./store";

// Groups of store methods that both backends implement in a module of their own (sqlite/*.ts and
// cosmos/*.ts), named once here so the two halves of a group cannot drift apart.

export type OrganiseOps = Pick<
  Store,
  | "listFolders"
  | "createFolder"
  | "renameFolder"
  | "deleteFolder"
  | "listMarks"
  | "setPinned"
  | "setFolder"
  | "forgetChat"
  | "markTemporary"
  | "unmarkTemporary"
  | "renewTemporary"
  | "dueTemporary"
  | "putFeedback"
  | "removeFeedback"
  | "chatFeedback"
  | "listFeedback"
  | "createShare"
  | "getShare"
  | "listShares"
  | "deleteShare"
  | "deleteChatShares"
>;

export type UsageOps = Pick<Store, "addUsage" | "putUsage" | "listUsage" | "tokensUsedSince" | "tokensPerDay" | "setTokensPerDay">;

export type UserOps = Pick<
  Store,
  "createUser" | "findUser" | "listUsers" | "addToken" | "userOfToken" | "revokeTokens" | "assignDevice" | "deviceOwner" | "assignedDevices"
>;
