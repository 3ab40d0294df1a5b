// Window ▸ Animation ▸ AnyMoLe Fill: pick an Animator and one of its clips, the context range and the keys,
// press Fill, watch progress and previews stream in, and get the in-betweens written into the clip (one Undo
// step). A domain reload (every script compile) ends the old session: the job id, the last event seen and the
// clip mapping live in SessionState, and the reloaded window re-attaches and finishes the job.
using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading.Tasks;
using AnyMoLe.Transport;
using UnityEditor;
using UnityEngine;
using Core = AnyMoLe.Core;

namespace AnyMoLe.Editor
{
    public sealed class FillWindow : EditorWindow
    {
        const string JobKey = "AnyMoLe.Job", ClipKey = "AnyMoLe.Clip", AnimatorKey = "AnyMoLe.Animator", StartKey = "AnyMoLe.ContextStart";

        Animator animator;
        AnimationClip clip;
        int contextStart, contextEnd = 30;
        string keys = "";
        int methodIndex, presetIndex;
        Core.AnyMoLeSession session;
        string status = "not connected";
        string error = "";
        float fraction;
        string stage = "";
        Texture2D preview;
        int progressId = -1;
        bool busy;

        [MenuItem("Window/Animation/AnyMoLe Fill")]
        static void Open()
        {
            GetWindow<FillWindow>("AnyMoLe Fill");
        }

        void OnEnable()
        {
            var saved = SessionState.GetString(JobKey, "");
            if (saved.Length > 0) Run(ResumeAfterReload(saved));
        }

        void OnDisable()
        {
            if (session != null) session.Dispose();  // the job runs on; SessionState remembers it
            session = null;
        }

        async void Run(Task task)
        {
            // Events resume on the editor's main thread (UnitySynchronizationContext); errors end up in the window.
            busy = true;
            try
            {
                await task;
            }
            catch (Core.AnyMoLeRpcException exc)
            {
                error = exc.Field.Length > 0 ? exc.Field + ": " + exc.Detail : exc.Code + ": " + exc.Detail;
            }
            catch (Exception exc)
            {
                error = exc.Message;
            }
            finally
            {
                busy = false;
                Repaint();
            }
        }

        async Task<Core.AnyMoLeSession> Connected()
        {
            if (session != null && session.Info != null) return session;
            var settings = AnyMoLeSettings.instance;
            var transport = new GrpcTransport(settings.ServerAddress, 4 << 20, settings.RootCertificatePem);
            session = new Core.AnyMoLeSession(transport, AnyMoLeSettings.Token, "anymole-unity (Unity " + Application.unityVersion + ")");
            var info = await session.ConnectAsync();
            status = "server " + info.ServerVersion + ", protocol " + info.ProtocolMajor + "." + info.ProtocolMinor + " on " + string.Join(", ", info.Devices.ToArray());
            return session;
        }

        void OnGUI()
        {
            var settings = AnyMoLeSettings.instance;
            EditorGUILayout.LabelField("Server", settings.ServerAddress + "  (Project Settings ▸ AnyMoLe)");
            EditorGUILayout.LabelField("Status", status);
            using (new EditorGUI.DisabledScope(busy))
                if (GUILayout.Button("Connect")) { error = ""; Run(Connected()); }

            animator = (Animator)EditorGUILayout.ObjectField("Animator", animator, typeof(Animator), true);
            var picked = (AnimationClip)EditorGUILayout.ObjectField("Clip", clip, typeof(AnimationClip), false);
            if (picked != clip)
            {
                clip = picked;
                if (clip != null)
                {
                    // Defaults from the clip: the first half is context, its last frame the key.
                    int frames = Mathf.RoundToInt(clip.length * clip.frameRate) + 1;
                    contextStart = 0;
                    contextEnd = Math.Max(1, frames / 2);
                    keys = (frames - 1).ToString();
                }
            }
            contextStart = EditorGUILayout.IntField("Context from frame", contextStart);
            contextEnd = EditorGUILayout.IntField("Context to frame (excluded)", contextEnd);
            keys = EditorGUILayout.TextField("Keys (clip frames)", keys);

            var methods = session != null && session.Info != null ? session.Info.Methods : new List<Core.MethodDescription>();
            if (methods.Count > 0)
            {
                var labels = methods.Select(m => new GUIContent(m.Available ? m.Name : m.Name + " (unavailable)", m.Available ? m.Description : m.UnavailableReason)).ToArray();
                methodIndex = Math.Min(EditorGUILayout.Popup(new GUIContent("Method"), methodIndex, labels), methods.Count - 1);
                var method = methods[methodIndex];
                if (!method.Available) EditorGUILayout.HelpBox(method.UnavailableReason, MessageType.Warning);
                else if (!method.ProducesMotion)
                    EditorGUILayout.HelpBox(method.Name + " generates a video, not motion: nothing would be written into the clip.", MessageType.Info);
                var rules = new List<string>();
                if (method.MinContextSeconds > 0) rules.Add("context of at least " + method.MinContextSeconds + " s");
                if (method.KeySpacingSeconds > 0) rules.Add("keys every " + method.KeySpacingSeconds + " s after the context");
                if (method.MaxGapSeconds > 0) rules.Add("gaps of at most " + method.MaxGapSeconds + " s");
                if (rules.Count > 0) EditorGUILayout.HelpBox(method.Name + " needs " + string.Join(", ", rules.ToArray()) + ".", MessageType.None);
                if (method.Presets.Length > 0)
                    presetIndex = Math.Min(EditorGUILayout.Popup("Preset", presetIndex, method.Presets), method.Presets.Length - 1);
            }

            using (new EditorGUI.DisabledScope(busy || animator == null || clip == null || methods.Count == 0 || !methods[methodIndex].Available || !methods[methodIndex].ProducesMotion))
                if (GUILayout.Button("Fill")) { error = ""; Run(Fill(methods[methodIndex], presetIndex)); }
            using (new EditorGUI.DisabledScope(session == null || session.State != Core.SessionState.Running))
                if (GUILayout.Button("Cancel")) Run(session.CancelAsync());

            var rect = EditorGUILayout.GetControlRect(false, 18);
            EditorGUI.ProgressBar(rect, fraction, stage.Length > 0 ? stage : "idle");
            if (session != null && session.JobId.Length > 0)
                EditorGUILayout.LabelField("Job", session.JobId + "  (event " + session.LastSeq + ")");
            if (error.Length > 0) EditorGUILayout.HelpBox(error, MessageType.Error);
            if (preview != null) GUILayout.Label(preview, GUILayout.MaxHeight(200));
        }

        int[] ParseKeys()
        {
            try
            {
                return keys.Split(',').Where(k => k.Trim().Length > 0).Select(k => int.Parse(k.Trim())).ToArray();
            }
            catch (FormatException)
            {
                throw new ArgumentException("Keys: give clip frames separated by commas, e.g. 60,82");
            }
        }

        async Task Fill(Core.MethodDescription method, int preset)
        {
            var rig = UnityRig.Read(animator);
            var unityMotion = rig.ReadClip(clip);
            var keyFrames = ParseKeys();
            if (contextStart < 0 || contextEnd <= contextStart || contextEnd > unityMotion.FrameCount)
                throw new ArgumentException("Context: " + contextStart + ".." + contextEnd + " is not a range of the clip's " + unityMotion.FrameCount + " frames");
            if (keyFrames.Length == 0 || keyFrames.Any(k => k < contextEnd || k >= unityMotion.FrameCount) || !keyFrames.SequenceEqual(keyFrames.Distinct().OrderBy(k => k)))
                throw new ArgumentException("Keys: give increasing clip frames in " + contextEnd + ".." + (unityMotion.FrameCount - 1) + " (after the context)");
            var s = await Connected();
            var character = rig.ToCanonical();
            stage = "upload";
            var up = await s.UploadCharacterAsync(character);
            var motion = Core.UnitySpace.Convert(unityMotion);
            var request = new Core.FillRequest
            {
                CharacterId = up.CharacterId, Context = motion.Slice(contextStart, contextEnd), Method = method.Name,
                Preset = method.Presets.Length > 0 ? method.Presets[preset] : "", Label = clip.name,
            };
            foreach (var k in keyFrames) request.Keyframes.Add(motion.KeyAt(k, k - contextStart));
            request.ClientTags["asset"] = AssetDatabase.GetAssetPath(clip);
            request.ClientTags["editor"] = "unity";
            await s.SubmitAsync(request);
            SessionState.SetString(ClipKey, AssetDatabase.GetAssetPath(clip));
            SessionState.SetString(AnimatorKey, GlobalObjectId.GetGlobalObjectIdSlow(animator).ToString());
            SessionState.SetInt(StartKey, contextStart);
            await Follow(s, rig, clip, contextStart);
        }

        async Task ResumeAfterReload(string saved)
        {
            var clipPath = SessionState.GetString(ClipKey, "");
            clip = AssetDatabase.LoadAssetAtPath<AnimationClip>(clipPath);
            GlobalObjectId id;
            if (GlobalObjectId.TryParse(SessionState.GetString(AnimatorKey, ""), out id))
                animator = GlobalObjectId.GlobalObjectIdentifierToObjectSlow(id) as Animator;
            if (clip == null || animator == null)
            {
                Forget();
                throw new InvalidOperationException("the clip or Animator of the running fill is gone; its job stays on the server");
            }
            var s = await Connected();
            s.Reattach(Core.SessionSnapshot.Parse(saved));
            await Follow(s, UnityRig.Read(animator), clip, SessionState.GetInt(StartKey, 0));
        }

        async Task Follow(Core.AnyMoLeSession s, UnityRig rig, AnimationClip target, int firstClipFrame)
        {
            progressId = Progress.Start("AnyMoLe Fill", target.name);
            Progress.RegisterCancelCallback(progressId, () => { Run(s.CancelAsync()); return true; });
            Core.JobEvent end;
            try
            {
                end = await s.WatchAsync(ev => OnEvent(s, ev));
            }
            catch
            {
                Progress.Finish(progressId, Progress.Status.Failed);
                throw;
            }
            var failed = end as Core.FailedEvent;
            if (end is Core.CompletedEvent)
            {
                var result = Core.UnitySpace.Convert(await s.DownloadResultAsync());
                rig.WriteClip(target, result, firstClipFrame);
                stage = "done: " + ((Core.CompletedEvent)end).Summary;
                Progress.Finish(progressId, Progress.Status.Succeeded);
            }
            else
            {
                Progress.Finish(progressId, end is Core.CancelledEvent ? Progress.Status.Canceled : Progress.Status.Failed);
                if (failed != null) error = failed.Field.Length > 0 ? failed.Field + ": " + failed.Message : failed.Message;
                else stage = end is Core.CancelledEvent ? "cancelled" : "interrupted: " + ((Core.InterruptedEvent)end).Reason;
            }
            Forget();
        }

        void OnEvent(Core.AnyMoLeSession s, Core.JobEvent ev)
        {
            SessionState.SetString(JobKey, s.Snapshot().ToString());  // what a reload resumes from
            var p = ev as Core.ProgressEvent;
            if (p != null)
            {
                fraction = p.Fraction;
                stage = p.Stage + (p.EtaSeconds >= 0 ? "  (" + Mathf.CeilToInt((float)p.EtaSeconds) + " s left)" : "") + (p.Message.Length > 0 ? "  " + p.Message : "");
                Progress.Report(progressId, p.Fraction, stage);
            }
            var q = ev as Core.QueuedEvent;
            if (q != null) stage = "queued, " + q.Position + " ahead";
            var v = ev as Core.PreviewEvent;
            if (v != null)
            {
                if (preview == null) preview = new Texture2D(2, 2);
                preview.LoadImage(v.Data);
            }
            Repaint();
        }

        void Forget()
        {
            SessionState.EraseString(JobKey);
            SessionState.EraseString(ClipKey);
            SessionState.EraseString(AnimatorKey);
            SessionState.EraseInt(StartKey);
        }
    }
}
