// Where the server is (per project, Project Settings ▸ AnyMoLe, saved in ProjectSettings/AnyMoLe.asset) and the
// bearer token (per user and machine, in EditorPrefs: never in a file that goes into version control).
using UnityEditor;
using UnityEngine;

namespace AnyMoLe.Editor
{
    [FilePath("ProjectSettings/AnyMoLe.asset", FilePathAttribute.Location.ProjectFolder)]
    public sealed class AnyMoLeSettings : ScriptableSingleton<AnyMoLeSettings>
    {
        const string TokenKey = "AnyMoLe.Token";

        [Tooltip("host:port of the AnyMoLe server (anymole serve), or https://host:port for TLS")]
        public string ServerAddress = "127.0.0.1:50051";

        [Tooltip("PEM root certificate of a TLS server with its own CA; empty trusts the system roots")]
        public string RootCertificatePem = "";

        public static string Token
        {
            get { return EditorPrefs.GetString(TokenKey, ""); }
            set { EditorPrefs.SetString(TokenKey, value ?? ""); }
        }

        public void Save() { Save(true); }

        [SettingsProvider]
        static SettingsProvider Create()
        {
            return new SettingsProvider("Project/AnyMoLe", SettingsScope.Project)
            {
                label = "AnyMoLe",
                keywords = new[] { "AnyMoLe", "inbetween", "server", "token" },
                guiHandler = _ =>
                {
                    var s = instance;
                    EditorGUI.BeginChangeCheck();
                    s.ServerAddress = EditorGUILayout.TextField("Server", s.ServerAddress);
                    s.RootCertificatePem = EditorGUILayout.TextField("TLS root certificate (PEM)", s.RootCertificatePem);
                    if (EditorGUI.EndChangeCheck()) s.Save();
                    var token = EditorGUILayout.PasswordField("Token (this machine only)", Token);
                    if (token != Token) Token = token;
                    EditorGUILayout.HelpBox("The token is kept in EditorPrefs on this machine, never in the project.", MessageType.None);
                },
            };
        }
    }
}
